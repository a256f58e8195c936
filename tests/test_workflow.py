"""The training workflow a practitioner relies on: separate splits, the best model kept, early
stopping, schedules that wait for epoch ends, a run directory that is a record, signals that
save a checkpoint, messages that say what is wrong. Every corpus is written by the tests."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rnnlab import api
from rnnlab.checkpoint import load_checkpoint
from rnnlab.cli import main
from rnnlab.data.prepare import prepare_corpus
from rnnlab.train import TrainConfig, mean_loss, train

QUIET = dict(progress=False, log=lambda *a: None)
SRC = Path(__file__).resolve().parents[1] / "src"
WORDS = [f"w{k}" for k in range(20)]


def write_tokens(path, n_lines, seed=0):
    """A ``tokens`` corpus with structure to learn: each word is often followed by the next one."""
    gen = np.random.default_rng(seed)
    lines = []
    for _ in range(n_lines):
        k = int(gen.integers(0, len(WORDS)))
        words = []
        for _ in range(int(gen.integers(4, 12))):
            words.append(WORDS[k])
            k = (k + 1) % len(WORDS) if gen.random() < 0.7 else int(gen.integers(0, len(WORDS)))
        lines.append(" ".join(words))
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def rows(out, event=None):
    """metrics.jsonl's evaluations (or its rows of one ``event``)."""
    lines = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return [row for row in lines if row.get("event") == event]


def small(**kw):
    """A small tanh RNN on a tokens corpus; ``kw`` replaces any of it."""
    return {**dict(format="tokens", cell="rnn", layers=1, hidden=16, embed=8, dropout=0.0, batch_size=4, bptt=8,
                   optimizer="adam", lr=0.01, clip=1.0), **kw}


def tree(directory):
    """Every file under ``directory`` with its bytes: to prove nothing was touched."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(Path(directory).rglob("*")) if p.is_file()}


# -- separate splits ----------------------------------------------------------------------


def test_valid_and_test_files_are_read_with_the_corpus_vocabulary(tmp_path):
    corpus, valid, test = (write_tokens(tmp_path / f"{n}.txt", 60, seed=s) for s, n in enumerate(["a", "b", "c"]))
    out = tmp_path / "run"
    result = train(TrainConfig(corpus=corpus, out=str(out), valid=valid, test=test, epochs=2, **small()), **QUIET)
    assert result.config.valid_fraction == 0  # the validation file replaces the held-out part
    vocab = result.vocab
    evaluations = rows(out)
    last = load_checkpoint(out)
    assert evaluations[-1]["valid_loss"] == mean_loss(result.model, prepare_corpus(valid, "tokens", vocab=vocab))
    # the whole file trains: 4 streams of all its tokens, less the last target of each stream
    assert evaluations[-1]["tokens"] == 2 * (prepare_corpus(corpus, "tokens").num_tokens // 4 - 1) * 4
    (scored,) = rows(out, "test")
    best = api.load(out / "best")
    assert scored["model"] == "best"
    assert scored["test_loss"] == mean_loss(best.model, prepare_corpus(test, "tokens", vocab=vocab))
    assert scored["test_perplexity"] == pytest.approx(math.exp(scored["test_loss"]))
    assert last.state["files"]["valid"]["path"] == str(Path(valid).resolve())


def test_valid_and_valid_fraction_together_are_refused(tmp_path):
    corpus = write_tokens(tmp_path / "a.txt", 30)
    with pytest.raises(ValueError, match="--valid and --valid-fraction"):
        train(TrainConfig(corpus=corpus, out=str(tmp_path / "run"), valid=corpus, valid_fraction=0.2, **small()),
              **QUIET)
    assert not (tmp_path / "run").exists()


# -- the best model and early stopping ----------------------------------------------------------------


def overfitting_run(tmp_path, **kw):
    """A tiny training file, a validation file of another distribution, a large rate: the validation
    loss falls, then rises."""
    corpus = write_tokens(tmp_path / "train.txt", 12, seed=1)
    valid = write_tokens(tmp_path / "valid.txt", 40, seed=7)
    out = tmp_path / "run"
    cfg = TrainConfig(corpus=corpus, out=str(out), valid=valid, epochs=30, eval_every=2,
                      **small(hidden=32, lr=0.05, clip=0.0, **kw))
    return train(cfg, **QUIET), out, valid


def test_best_checkpoint_holds_the_lowest_validation_loss(tmp_path):
    result, out, valid = overfitting_run(tmp_path)
    losses = [row["valid_loss"] for row in rows(out)]
    best_at = int(np.argmin(losses))
    assert best_at < len(losses) - 1  # it overfits: the last model is not the best
    best = api.load(out / "best")
    assert best.evaluate(valid).loss == pytest.approx(losses[best_at], rel=1e-12)
    assert load_checkpoint(out / "best").state["step"] == rows(out)[best_at]["step"]
    assert load_checkpoint(out).state["best_loss"] == losses[best_at]
    # eval, generate and score take the best model as they take the last one
    assert main(["eval", str(out / "best"), valid, "--json"]) == 0
    assert main(["generate", str(out / "best"), "--max-length", "5"]) == 0
    assert main(["score", str(out / "best"), valid]) == 0


def test_early_stop_ends_the_run_after_n_evaluations_without_improvement(tmp_path):
    result, out, _ = overfitting_run(tmp_path, early_stop=3)
    losses = [row["valid_loss"] for row in rows(out)]
    best_at = int(np.argmin(losses))
    assert len(losses) == best_at + 1 + 3  # three evaluations without a lower loss, then the stop
    assert result.epoch < 30


def test_early_stop_needs_validation(tmp_path):
    corpus = write_tokens(tmp_path / "a.txt", 30)
    with pytest.raises(ValueError, match="--early-stop needs validation"):
        train(TrainConfig(corpus=corpus, out=str(tmp_path / "run"), valid_fraction=0, early_stop=2, **small()),
              **QUIET)


# -- schedules wait for epoch ends ----------------------------------------------------------------


@pytest.mark.parametrize("schedule_at", ["epoch", "eval"])
def test_eval_every_does_not_feed_the_schedule_unless_asked(tmp_path, schedule_at):
    """A rate so high that the validation loss rises between evaluations: with schedule_at "epoch"
    (the default) only epoch ends cut it; with "eval" the evaluations inside an epoch do too."""
    corpus = write_tokens(tmp_path / "a.txt", 40)
    cfg = TrainConfig(corpus=corpus, out=str(tmp_path / "run"), epochs=3, eval_every=3, schedule="plateau",
                      schedule_at=schedule_at, **small(lr=0.3, clip=0.0))
    train(cfg, **QUIET)
    evaluations = rows(tmp_path / "run")
    # the evaluations after which the rate was cut (the next row shows the new rate)
    cuts = [a["epoch"] for a, b in zip(evaluations, evaluations[1:]) if b["lr"] < a["lr"]]
    assert cuts
    inside = [epoch for epoch in cuts if epoch != int(epoch)]
    assert bool(inside) == (schedule_at == "eval"), cuts


# -- the run directory is a record ------------------------------------------------------------------


def test_a_folder_with_another_runs_files_is_not_overwritten(tmp_path):
    corpus = write_tokens(tmp_path / "a.txt", 30)
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 7}\n')
    (out / "vocab.json").write_text("{}")
    before = tree(out)
    assert main(["train", corpus, "--out", str(out), "--quiet", "--max-steps", "2"] + CLI_SMALL) == 2
    assert tree(out) == before
    assert main(["train", corpus, "--out", str(out), "--quiet", "--max-steps", "2", "--force"] + CLI_SMALL) == 0
    assert rows(out)[0]["step"] == 0


CLI_SMALL = ["--format", "tokens", "--cell", "rnn", "--layers", "1", "--hidden", "8", "--embed", "4",
             "--batch-size", "2", "--bptt", "4", "--optimizer", "adam", "--lr", "0.01", "--dropout", "0"]


def test_resume_from_another_directory_finds_the_corpus(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    write_tokens(tmp_path / "data" / "a.txt", 30)
    monkeypatch.chdir(tmp_path / "data")
    train(TrainConfig(corpus="a.txt", out=str(tmp_path / "run"), epochs=1, **small()), **QUIET)
    monkeypatch.chdir(tmp_path)  # "a.txt" is not here: the checkpoint names it by its absolute path
    result = train(TrainConfig(out=str(tmp_path / "run"), epochs=2), resume=True, **QUIET)
    assert result.epoch == 2 and result.config.corpus == str(tmp_path / "data" / "a.txt")


def test_a_changed_corpus_is_refused_on_resume_unless_said(tmp_path):
    corpus = write_tokens(tmp_path / "a.txt", 30)
    other = write_tokens(tmp_path / "b.txt", 30, seed=5)
    out = tmp_path / "run"
    assert main(["train", corpus, "--out", str(out), "--epochs", "1", "--quiet"] + CLI_SMALL) == 0
    before = tree(out)
    for given in ([other], []):  # another file named on the command line, or the same file changed
        if not given:
            Path(corpus).write_text(Path(corpus).read_text() + "w1 w2 w3\n")
        assert main(["train", *given, "--out", str(out), "--resume", "--epochs", "2", "--quiet"]) == 2
        assert tree(out) == before
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2", "--quiet", "--corpus-changed"]) == 0
    assert load_checkpoint(out).state["epoch"] == 2


def test_metrics_rows_carry_wall_clock_time_and_mark_resumes(tmp_path):
    corpus = write_tokens(tmp_path / "a.txt", 30)
    started = time.time()
    train(TrainConfig(corpus=corpus, out=str(tmp_path / "run"), epochs=1, **small()), **QUIET)
    train(TrainConfig(out=str(tmp_path / "run"), epochs=2), resume=True, **QUIET)
    evaluations = rows(tmp_path / "run")
    times = [row["wall_time"] for row in evaluations]
    assert started - 1 <= times[0] <= times[-1] <= time.time() + 1 and times == sorted(times)
    (resumed,) = rows(tmp_path / "run", "resume")
    assert resumed["step"] == evaluations[1]["step"] and resumed["epoch"] == 1


def test_gradient_statistics_are_in_the_metrics(tmp_path):
    corpus = write_tokens(tmp_path / "a.txt", 30)
    train(TrainConfig(corpus=corpus, out=str(tmp_path / "run"), epochs=1, **small(clip=0.05, lr=0.05)), **QUIET)
    row = rows(tmp_path / "run")[-1]
    assert row["grad_norm_max"] >= row["grad_norm"] > 0
    assert 0 < row["clipped"] <= 1  # a clip this low cuts some steps
    model_params = load_checkpoint(tmp_path / "run").params
    assert set(row["update_ratio"]) == set(model_params)
    assert all(0 < r <= 1 for r in row["update_ratio"].values())  # 1: a bias that started at zero


# -- signals ------------------------------------------------------------------------------------


def interrupt_at(monkeypatch, step, signum=signal.SIGINT, times=1):
    """Deliver ``signum`` to this process (``times`` times) right after optimiser step ``step``."""
    import rnnlab.train as train_module

    real = train_module.take_step

    def take_step(run, *batch):
        done = real(run, *batch)
        if run.state.step + 1 == step:
            for _ in range(times):
                os.kill(os.getpid(), signum)
        return done

    monkeypatch.setattr(train_module, "take_step", take_step)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_the_step_and_resume_is_bit_identical(tmp_path, monkeypatch, signum):
    from rnnlab.interrupts import Interrupted

    corpus = write_tokens(tmp_path / "a.txt", 40)
    cfg = dict(corpus=corpus, epochs=2, eval_every=4, **small(dropout=0.1, layers=2, cell="lstm"))
    straight = train(TrainConfig(out=str(tmp_path / "straight"), **cfg), **QUIET)
    interrupt_at(monkeypatch, 7, signum)
    with pytest.raises(Interrupted, match=f"stopped by {signal.Signals(signum).name} at step 7") as stop:
        train(TrainConfig(out=str(tmp_path / "run"), **cfg), **QUIET, resume_hint="rnnlab train --resume")
    assert stop.value.exit_status == 128 + signum and "continue with: rnnlab train --resume" in str(stop.value)
    assert load_checkpoint(tmp_path / "run").state["step"] == 7  # not an evaluation point
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    monkeypatch.undo()
    train(TrainConfig(out=str(tmp_path / "run")), resume=True, **QUIET)
    a, b = load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "run")
    assert a.state["step"] == b.state["step"] == straight.step
    for name in a.params:
        assert np.array_equal(a.params[name], b.params[name]), name
    for name in a.optimizer_arrays:
        assert np.array_equal(a.optimizer_arrays[name], b.optimizer_arrays[name]), name


def test_a_second_ctrl_c_stops_at_once_and_leaves_the_last_checkpoint(tmp_path, monkeypatch):
    corpus = write_tokens(tmp_path / "a.txt", 40)
    out = tmp_path / "run"
    train(TrainConfig(corpus=corpus, out=str(out), epochs=1, eval_every=4, **small()), **QUIET)
    before = tree(out)
    interrupt_at(monkeypatch, 6, times=2)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(corpus=corpus, out=str(out), epochs=2, eval_every=4, **small()), **QUIET, force=True)
    saved = load_checkpoint(out)  # complete and readable: the evaluation at step 4
    assert saved.state["step"] == 4 and tree(out) != before


def test_ctrl_c_in_a_real_process(tmp_path):
    """The command line: SIGINT ends the run with status 130, one line, and a checkpoint to resume."""
    corpus = write_tokens(tmp_path / "a.txt", 400)
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    process = subprocess.Popen([sys.executable, "-m", "rnnlab", "train", corpus, "--out", str(out), "--quiet",
                                "--epochs", "1000"] + CLI_SMALL, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (out / "loss.png").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("rnnlab: stopped by SIGINT at step "), err
    assert f"continue with: rnnlab train --resume --out {out}" in lines[0]
    step = int(lines[0].split("at step ")[1].split(";")[0])
    assert load_checkpoint(out).state["step"] == step  # usually > 0; 0 on a very slow start


# -- messages -----------------------------------------------------------------------------------------


def test_eval_takes_the_model_format_and_refuses_one_that_contradicts_it(tmp_path, capsys):
    corpus = write_tokens(tmp_path / "a.txt", 30)
    out = tmp_path / "run"
    assert main(["train", corpus, "--out", str(out), "--epochs", "1", "--quiet"] + CLI_SMALL) == 0
    capsys.readouterr()
    assert main(["eval", str(out), corpus, "--json"]) == 0  # tokens, from the checkpoint
    assert json.loads(capsys.readouterr().out)["tokens"] == prepare_corpus(corpus, "tokens").num_tokens - 1
    assert main(["eval", str(out), corpus, "--format", "chars"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"rnnlab: error: the model in {out} was trained on a stream of words (--format tokens); "
                   "--format chars reads a stream of characters; leave --format out to use the model's"]


def test_eval_of_a_csv_model_on_a_text_file_points_at_format_text(tmp_path, capsys):
    csv = tmp_path / "c.csv"
    csv.write_text("body\n" + "\n".join(f'"{" ".join(WORDS[k:k + 6])} ."' for k in range(10)) + "\n")
    out = tmp_path / "run"
    assert main(["train", str(csv), "--out", str(out), "--epochs", "1", "--hidden", "4", "--quiet"]) == 0
    text = tmp_path / "t.txt"
    text.write_text("w1 w2 w3 .\n")
    capsys.readouterr()
    assert main(["eval", str(out), str(text)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "body" in line and line.endswith("for one sentence per line pass --format text)")
    assert main(["eval", str(out), str(text), "--format", "text"]) == 0


def test_one_vocabulary_size_rule(tmp_path, capsys):
    """A vocabulary larger than the corpus's distinct tokens keeps them all, with a warning, however large."""
    corpus = write_tokens(tmp_path / "a.txt", 30)
    for size in ("25", "100000"):
        out = tmp_path / f"run{size}"
        assert main(["train", corpus, "--out", str(out), "--epochs", "1", "--quiet", "--vocab-size", size]
                    + CLI_SMALL) == 0
        assert "only 21 distinct tokens: using 22 ids" in capsys.readouterr().err  # 20 words and <eos>
        assert len(api.load(out).vocab) == 22  # 20 words, <eos> and <unk>


def test_unknown_prompt_words_are_named(tmp_path, capsys):
    corpus = write_tokens(tmp_path / "a.txt", 30)
    out = tmp_path / "run"
    assert main(["train", corpus, "--out", str(out), "--epochs", "1", "--quiet"] + CLI_SMALL) == 0
    capsys.readouterr()
    assert main(["generate", str(out), "--prompt", "w1 zebra w2 yak", "--max-length", "3"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == ["rnnlab: warning: the prompt has 2 tokens the model does not know, read as '<unk>': "
                   "'zebra', 'yak'"]


def test_a_data_dir_that_does_not_exist_stops_the_demo(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RNNLAB_DATA_DIR", str(tmp_path / "nowhere"))
    assert main(["demo", "--steps", "1"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("rnnlab: error: RNNLAB_DATA_DIR is ") and "not a folder" in line


def test_the_demo_does_not_suggest_what_it_cannot_do(tmp_path, capsys):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "checkpoint.json").write_text("{}")
    assert main(["demo", "--out", str(out), "--steps", "1"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "--resume" not in line and "--force" in line


# -- the Python API ------------------------------------------------------------------------------------


def test_the_python_api_does_what_the_command_line_does(tmp_path, capsys):
    corpus, valid = write_tokens(tmp_path / "a.txt", 30), write_tokens(tmp_path / "v.txt", 10, seed=3)
    run = api.train(corpus, out=tmp_path / "run", valid=valid, epochs=1, **small())
    assert capsys.readouterr().out == ""  # quiet by default
    assert run.format == "tokens" and run.config.valid == valid
    result = run.evaluate(valid)
    assert main(["eval", str(tmp_path / "run"), valid, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == result._asdict()
    assert run.generate(seed=3, max_length=5) == run.generate(seed=3, max_length=5)
    (score,) = run.score(["w1 w2 w3"])
    assert score.tokens == 4 and score.logprob < 0
    again = api.train(out=tmp_path / "run", resume=True, epochs=2)
    assert again.config.epochs == 2


# -- prepare once -------------------------------------------------------------------------------------


def test_a_prepared_folder_trains_as_its_file_does(tmp_path, capsys):
    corpus = write_tokens(tmp_path / "a.txt", 40)
    assert main(["prepare", corpus, "--format", "tokens", "--out", str(tmp_path / "prepared")]) == 0
    assert "rnnlab train" in capsys.readouterr().out
    cfg = dict(epochs=1, **{k: v for k, v in small().items() if k != "format"})
    from_file = train(TrainConfig(corpus=corpus, format="tokens", out=str(tmp_path / "f"), **cfg), **QUIET)
    from_folder = train(TrainConfig(corpus=str(tmp_path / "prepared"), out=str(tmp_path / "p"), **cfg), **QUIET)
    assert from_folder.config.format == "tokens"  # the folder's own
    for name, value in from_file.model.params.items():
        assert np.array_equal(value, from_folder.model.params[name]), name
    # the folder records the file it came from: the checkpoint names that file
    assert load_checkpoint(tmp_path / "p").state["files"]["corpus"]["path"] == str(Path(corpus).resolve())


def test_prepare_refuses_a_folder_that_is_not_a_prepared_corpus(tmp_path, capsys):
    corpus = write_tokens(tmp_path / "a.txt", 10)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert main(["prepare", corpus, "--format", "tokens", "--out", str(tmp_path / "busy")]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "refusing to overwrite it" in line and (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def test_train_resume_and_eval_read_the_text_once(tmp_path, monkeypatch):
    import rnnlab.data.cache as cache

    prepared = []
    real = cache._prepare

    def counting(source, *args, **kw):
        prepared.append(Path(source).name)
        return real(source, *args, **kw)

    monkeypatch.setattr(cache, "_prepare", counting)
    corpus, valid = write_tokens(tmp_path / "a.txt", 40), write_tokens(tmp_path / "v.txt", 10, seed=4)
    out = tmp_path / "run"
    train(TrainConfig(corpus=corpus, valid=valid, out=str(out), epochs=1, **small()), **QUIET)
    assert sorted(prepared) == ["a.txt", "v.txt"]
    train(TrainConfig(out=str(out), epochs=2), resume=True, **QUIET)
    api.load(out).evaluate(valid)
    assert sorted(prepared) == ["a.txt", "v.txt"]  # nothing read again
    assert main(["eval", str(out), corpus]) == 0  # the corpus in the model's vocabulary: read once
    assert main(["eval", str(out), corpus]) == 0
    assert sorted(prepared) == ["a.txt", "a.txt", "v.txt"]
    Path(corpus).write_text(Path(corpus).read_text() + "w3 w4\n")  # a changed file is read again
    api.load(out).evaluate(corpus)
    assert prepared.count("a.txt") == 3
