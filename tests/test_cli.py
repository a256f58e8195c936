"""The command line: every command end to end, and bad input as one line with exit status 2."""
import hashlib
import io
import json
import math
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from rnnlab.cli import build_parser, main

SRC = Path(__file__).resolve().parent.parent / "src"
pytestmark = pytest.mark.filterwarnings("ignore::rnnlab.data.readers.TruncatedCorpusWarning")


@pytest.fixture(scope="module")
def run_dir(reddit, tmp_path_factory):
    """A small sentence model trained by the command line (vocabulary of 300: UNKNOWN_TOKEN is frequent)."""
    out = tmp_path_factory.mktemp("cli") / "run"
    code = main(["train", reddit, "--out", str(out), "--vocab-size", "300", "--hidden", "8", "--batch-size", "32",
                 "--optimizer", "adam", "--lr", "0.01", "--epochs", "2", "--quiet"])
    assert code == 0
    return out


def snapshot(directory):
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(directory).rglob("*")) if p.is_file()}


def test_train_prints_progress_per_evaluation(reddit, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", reddit, "--out", str(out), "--vocab-size", "100", "--hidden", "4", "--batch-size", "64",
                 "--epochs", "1", "--valid-fraction", "0"]) == 0
    stdout = capsys.readouterr().out
    assert "epoch 0  step 0  train loss" in stdout and "epoch 1  step 17  train loss" in stdout
    assert "valid loss" not in stdout  # no validation split
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["valid_loss"] for m in lines] == [None, None] and lines[-1]["perplexity"] is None
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2", "--quiet"]) == 0  # CORPUS from the checkpoint
    assert capsys.readouterr().out == ""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(row["step"], row.get("event")) for row in rows] == [(0, None), (17, None), (17, "resume"), (34, None)]


def test_eval_json(run_dir, reddit, capsys):
    assert main(["eval", str(run_dir), reddit, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"tokens", "loss", "perplexity"}
    assert result["perplexity"] == pytest.approx(math.exp(result["loss"]))
    from rnnlab.data.prepare import prepare_corpus
    from rnnlab.train import load_trained

    corpus = prepare_corpus(reddit, "csv", vocab=load_trained(run_dir).vocab)
    assert result["tokens"] == corpus.num_tokens - corpus.num_sentences  # every target of every sentence
    assert 3.0 < result["loss"] < math.log(300)
    assert main(["eval", str(run_dir), reddit]) == 0
    text = capsys.readouterr().out
    assert f"tokens      {result['tokens']}" in text and "perplexity" in text


def test_eval_counts_unknown_words_as_the_unknown_token(run_dir, tmp_path, capsys):
    path = tmp_path / "new.txt"
    path.write_text("zqxv wvut the\n", encoding="utf-8")
    assert main(["eval", str(run_dir), str(path), "--format", "text", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tokens"] == 4  # three words and SENTENCE_END


def test_generate_sentences(run_dir, capsys):
    assert main(["generate", str(run_dir), "-n", "10", "--seed", "7"]) == 0
    first = capsys.readouterr().out
    lines = first.splitlines()
    assert len(lines) == 10
    for marker in ("UNKNOWN_TOKEN", "SENTENCE_START", "SENTENCE_END"):
        assert marker not in first
    assert main(["generate", str(run_dir), "-n", "10", "--seed", "7"]) == 0
    assert capsys.readouterr().out == first
    assert main(["generate", str(run_dir), "-n", "10", "--seed", "8", "--top-k", "20", "--temperature", "0.7"]) == 0
    assert capsys.readouterr().out != first


def test_score_reads_stdin(run_dir, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(sys, "stdin", io.StringIO("i think so .\nthe\n"))
    assert main(["score", str(run_dir)]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [len(r) for r in rows] == [3, 3]
    (lp1, n1, ppl1), (lp2, n2, ppl2) = [(float(a), int(b), float(c)) for a, b, c in rows]
    assert (n1, n2) == (5, 2) and lp1 < lp2 < 0
    assert ppl1 == pytest.approx(math.exp(-lp1 / n1), rel=1e-3)
    path = tmp_path / "lines.txt"
    path.write_text("i think so .\nthe\n", encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", io.StringIO("i think so .\nthe\n"))
    assert main(["score", str(run_dir), "-"]) == 0
    from_stdin = capsys.readouterr().out
    assert main(["score", str(run_dir), str(path)]) == 0
    assert capsys.readouterr().out == from_stdin


def test_score_subprocess_stdin(run_dir):
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run([sys.executable, "-m", "rnnlab", "score", str(run_dir), "-"], input="hello there .\n",
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 1 and len(done.stdout.split("\t")) == 3


# -- bad input -----------------------------------------------------------------------


@pytest.fixture
def files(run_dir, tmp_path):
    """Bad corpora, a corrupt and a foreign checkpoint, and a copy of a good run to guard."""
    f = {"tmp": tmp_path, "run": tmp_path / "run", "corrupt": tmp_path / "corrupt", "foreign": tmp_path / "foreign"}
    shutil.copytree(run_dir, f["run"])
    shutil.copytree(run_dir, f["corrupt"])
    doc = json.loads((f["corrupt"] / "checkpoint.json").read_text())
    model_file = f["corrupt"] / doc["files"]["model"]["name"]
    data = bytearray(model_file.read_bytes())
    data[-5] ^= 0xFF
    model_file.write_bytes(bytes(data))
    f["foreign"].mkdir()
    (f["foreign"] / "checkpoint.json").write_text('{"model": "resnet50", "epoch": 3}')
    (f["foreign"] / "weights.bin").write_bytes(b"\0\1\2")
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "header-only.csv").write_text("body\n")
    (tmp_path / "binary.dat").write_bytes(b"\x7fELF\x02\x01\x01\0\0\0\0\0" * 50)
    (tmp_path / "nobody.csv").write_text("author,score\nalice,3\nbob,5\n")
    (tmp_path / "small.txt").write_text("the cat sat .\nthe dog .\n")
    (tmp_path / "nocheckpoint").mkdir()
    return f


BAD = {
    "missing corpus (resume)": (["train", "{tmp}/missing.csv", "--out", "{run}", "--resume"], "run"),
    "missing corpus (new run)": (["train", "{tmp}/missing.csv", "--out", "{tmp}/new"], None),
    "empty corpus (resume)": (["train", "{tmp}/header-only.csv", "--out", "{run}", "--resume"], "run"),
    "empty corpus (new run)": (["train", "{tmp}/empty.txt", "--out", "{tmp}/new"], None),
    "binary corpus": (["train", "{tmp}/binary.dat", "--out", "{tmp}/new"], None),
    "binary corpus (resume)": (["train", "{tmp}/binary.dat", "--out", "{run}", "--resume"], "run"),
    "csv without body": (["train", "{tmp}/nobody.csv", "--out", "{run}", "--resume"], "run"),
    "csv without body (new run)": (["train", "{tmp}/nobody.csv", "--out", "{tmp}/new"], None),
    "corrupt checkpoint: generate": (["generate", "{corrupt}"], "corrupt"),
    "corrupt checkpoint: eval": (["eval", "{corrupt}", "{tmp}/small.txt"], "corrupt"),
    "corrupt checkpoint: score": (["score", "{corrupt}", "{tmp}/small.txt"], "corrupt"),
    "corrupt checkpoint: resume": (["train", "{tmp}/small.txt", "--out", "{corrupt}", "--resume"], "corrupt"),
    "foreign checkpoint: generate": (["generate", "{foreign}"], "foreign"),
    "foreign checkpoint: resume": (["train", "{tmp}/small.txt", "--out", "{foreign}", "--resume"], "foreign"),
    "foreign checkpoint: overwrite": (["train", "{tmp}/small.txt", "--out", "{foreign}"], "foreign"),
    "eval without checkpoint": (["eval", "{tmp}/nocheckpoint", "{tmp}/small.txt"], None),
    "eval of a missing directory": (["eval", "{tmp}/nowhere", "{tmp}/small.txt"], None),
    "negative --hidden": (["train", "{tmp}/small.txt", "--out", "{tmp}/new", "--hidden", "-5"], None),
    "negative --hidden (resume)": (["train", "--out", "{run}", "--resume", "--hidden", "-5"], "run"),
    "existing checkpoint without --resume": (["train", "{tmp}/small.txt", "--out", "{run}"], "run"),
    "resume with another model size": (["train", "--out", "{run}", "--resume", "--hidden", "7"], "run"),
    "window BPTT with 2 layers": (["train", "{tmp}/small.txt", "--out", "{tmp}/new", "--layers", "2"], None),
    "bad temperature": (["generate", "{run}", "--temperature", "-1"], "run"),
    "non-numeric --lr": (["train", "{tmp}/small.txt", "--out", "{tmp}/new", "--lr", "fast"], None),
    "score of a missing file": (["score", "{run}", "{tmp}/missing.txt"], "run"),
    "score of a binary file": (["score", "{run}", "{tmp}/binary.dat"], "run"),
    "eval of a stream format on a sentence model": (["eval", "{run}", "{tmp}/small.txt", "--format", "chars"], "run"),
    "unknown command": (["fly"], None),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_and_exit_2(case, files, capsys):
    argv, guarded = BAD[case]
    argv = [a.format(**{k: str(v) for k, v in files.items()}) for a in argv]
    before = snapshot(files[guarded]) if guarded else None
    code = main(argv)
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if not line.startswith("rnnlab: warning: ")]
    assert code == 2, captured
    assert len(errors) == 1 and errors[0].startswith("rnnlab: error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    if guarded:
        assert snapshot(files[guarded]) == before
    assert not (files["tmp"] / "new").exists()  # a failed new run writes nothing


def test_bad_input_in_a_real_process(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run([sys.executable, "-m", "rnnlab", "train", str(tmp_path / "missing.csv"), "--out",
                           str(tmp_path / "run")], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"rnnlab: error: {tmp_path / 'missing.csv'}: no such file"]
    assert not (tmp_path / "run").exists()


def test_interrupt_exits_130(monkeypatch, capsys, tmp_path):
    import rnnlab.train

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(rnnlab.train, "train", interrupted)
    assert main(["train", str(tmp_path / "x.txt"), "--out", str(tmp_path / "run")]) == 130
    assert len(capsys.readouterr().err.splitlines()) == 1


# -- the other commands --------------------------------------------------------------


def test_every_command_and_flag_has_help(capsys):
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert set(commands) == {"train", "eval", "generate", "score", "prepare", "diagnose", "plot", "demo", "gradcheck", "bench"}
    for name, sub in commands.items():
        for action in sub._actions:
            assert action.help, (name, action.dest)
        if name != "bench":
            assert main([name, "--help"]) == 0
            assert capsys.readouterr().out.startswith(f"usage: rnnlab {name}")
    train_flags = {o for a in commands["train"]._actions for o in a.option_strings}
    assert {"--format", "--vocab-size", "--cell", "--hidden", "--embed", "--layers", "--batch-size", "--bptt",
            "--bptt-mode", "--optimizer", "--lr", "--clip", "--epochs", "--valid-fraction", "--seed", "--dtype",
            "--resume", "--quiet", "--force", "--out"} <= train_flags


def test_bench_gets_its_arguments(monkeypatch):
    import rnnlab

    seen = []
    fake = types.ModuleType("rnnlab.bench")
    fake.main = lambda argv: seen.append(argv) or 0
    monkeypatch.setitem(sys.modules, "rnnlab.bench", fake)
    monkeypatch.setattr(rnnlab, "bench", fake, raising=False)
    assert main(["bench", "--json", "--quick"]) == 0
    assert seen == [["--json", "--quick"]]


def test_gradcheck_exit_status(monkeypatch):
    import rnnlab.gradcheck

    monkeypatch.setattr(rnnlab.gradcheck, "run_all", lambda emit=print, **kw: True)
    assert main(["gradcheck"]) == 0
    monkeypatch.setattr(rnnlab.gradcheck, "run_all", lambda emit=print, **kw: False)
    assert main(["gradcheck"]) == 1


def test_demo_trains_and_writes(data_dir, monkeypatch, tmp_path, capsys):
    from dataclasses import replace

    import rnnlab.demo

    # The real demo takes two minutes; the same code path at a toy size.
    monkeypatch.setenv("RNNLAB_DATA_DIR", str(data_dir))
    monkeypatch.setattr(rnnlab.demo, "DEMO", replace(rnnlab.demo.DEMO, hidden=16, embed=8, eval_tokens=2000,
                                                     valid_fraction=0.01))
    temp = tmp_path / "temp"
    monkeypatch.setattr(rnnlab.demo.tempfile, "mkdtemp", lambda **kw: (temp.mkdir(), str(temp))[1])
    assert main(["demo", "--steps", "20", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert len(text.strip("\n")) > 400
    assert not temp.exists()  # the temporary run is cleaned up
    assert main(["demo", "--steps", "5", "--out", str(tmp_path / "kept")]) == 0
    out = capsys.readouterr().out
    assert "validation loss" in out and (tmp_path / "kept" / "checkpoint.json").exists()
