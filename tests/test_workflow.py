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
