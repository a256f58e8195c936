"""What a run shows about itself when asked: TensorBoard event files, the gradient by lag through
training, and the commands that compare runs (rnnlab diagnose, rnnlab plot)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rnnlab.cli import main
from rnnlab.train import TrainConfig, train

QUIET = dict(progress=False, log=lambda *a: None)
SRC = Path(__file__).resolve().parents[1] / "src"
PNG = b"\x89PNG\r\n\x1a\n"


def write_chars(path, n=6000, seed=0):
    """A chars corpus with long-range structure: a repeated phrase with noise."""
    gen = np.random.default_rng(seed)
    text = "".join("the cat sat on the mat. " if gen.random() < 0.6 else "a dog ran. " for _ in range(n // 15))
    Path(path).write_text(text[:n], encoding="utf-8")
    return str(path)


def small(**kw):
    return {**dict(format="chars", cell="rnn", hidden=16, embed=8, batch_size=4, bptt=16, optimizer="adam",
                   lr=0.01, clip=1.0, epochs=1), **kw}


def test_tensorboard_events_are_read_back_by_tensorboard(tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    corpus = write_chars(tmp_path / "c.txt")
    out = tmp_path / "run"
    train(TrainConfig(corpus=corpus, out=str(out), eval_every=20, tensorboard=True, **small()), **QUIET)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    reader = event_accumulator.EventAccumulator(str(out / "tb"), size_guidance={"scalars": 0, "histograms": 0})
    reader.Reload()
    train_loss = reader.Scalars("metrics/train_loss")
    assert [e.step for e in train_loss] == [row["step"] for row in rows]
    assert [e.value for e in train_loss] == pytest.approx([row["train_loss"] for row in rows], rel=1e-6)
    assert [e.value for e in reader.Scalars("metrics/lr")] == pytest.approx([row["lr"] for row in rows])
    assert len(reader.Scalars("metrics/grad_norm")) == len(rows) - 1  # none before the first step
    tags = reader.Tags()["histograms"]
    for name in ("encoder.weight", "rnn.weight_hh_l0", "decoder.weight"):
        assert f"weights/{name}" in tags and f"gradients/{name}" in tags
    weights = reader.Histograms("weights/rnn.weight_hh_l0")[-1].histogram_value
    from rnnlab.checkpoint import load_checkpoint

    w = load_checkpoint(out).params["rnn.weight_hh_l0"]
    assert weights.num == w.size and weights.min == pytest.approx(w.min()) and weights.max == pytest.approx(w.max())


def test_a_run_without_the_flags_imports_and_writes_nothing_extra(tmp_path):
    corpus = write_chars(tmp_path / "c.txt", 2000)
    code = ("import sys; from rnnlab.train import TrainConfig, train; "
            f"train(TrainConfig(corpus={corpus!r}, out={str(tmp_path / 'run')!r}, format='chars', hidden=8, "
            "embed=4, batch_size=4, bptt=8, max_steps=3), progress=False, log=lambda *a: None); "
            "print(sorted(m for m in ('tensorboardX', 'tensorboard', 'torch') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(SRC)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert not (tmp_path / "run" / "tb").exists() and not (tmp_path / "run" / "diagnose.jsonl").exists()


def test_diagnose_every_records_the_curve_through_training_and_resume_keeps_it_consistent(tmp_path):
    corpus = write_chars(tmp_path / "c.txt")
    out = tmp_path / "run"
    cfg = small(eval_every=10, diagnose_every=2)
    train(TrainConfig(corpus=corpus, out=str(out), max_steps=45, **cfg), **QUIET)
    lines = [json.loads(line) for line in (out / "diagnose.jsonl").read_text().splitlines()]
    evaluated = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == evaluated[::2]  # every 2nd evaluation, the first included
    assert all(line["curves"][0]["ratio"][0] == 1.0 and len(line["curves"][0]["ratio"]) == 51 for line in lines)
    # a later line beyond the checkpoint's step (an interrupted run's) is dropped on resume
    with open(out / "diagnose.jsonl", "a") as f:
        f.write(json.dumps({**lines[-1], "step": 10_000}) + "\n")
    train(TrainConfig(out=str(out), max_steps=60), resume=True, **QUIET)
    steps = [json.loads(line)["step"] for line in (out / "diagnose.jsonl").read_text().splitlines()]
    assert 10_000 not in steps and steps == sorted(steps) and steps[: len(lines)] == [x["step"] for x in lines]


def test_diagnose_command_on_runs_and_fresh_cells(tmp_path, capsys):
    corpus = write_chars(tmp_path / "c.txt")
    for cell in ("rnn", "lstm"):
        train(TrainConfig(corpus=corpus, out=str(tmp_path / cell), max_steps=20, **small(cell=cell)), **QUIET)
    plot = tmp_path / "lags.png"
    assert main(["diagnose", str(tmp_path / "rnn"), str(tmp_path / "lstm"), "--max-lag", "12", "--json",
                 "--plot", str(plot)]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["label"] for r in results] == ["rnn", "lstm"] and [r["cell"] for r in results] == ["rnn", "lstm"]
    assert [c["part"] for c in results[1]["curves"]] == ["h", "c"]
    assert plot.read_bytes().startswith(PNG)
    assert main(["diagnose", "--cell", "rnn", "--cell", "gru", "--corpus", corpus, "--format", "chars",
                 "--hidden", "8", "--max-lag", "5"]) == 0
    table = capsys.readouterr().out
    assert "rnn (untrained)" in table and "gru (untrained)" in table and "effective memory" in table


@pytest.mark.parametrize("argv,message", [
    (["diagnose"], "needs run directories or --cell"),
    (["diagnose", "--cell", "rnn"], "needs --corpus"),
    (["diagnose", "{tmp}/nowhere"], "no checkpoint directory"),
    (["plot", "{tmp}/empty", "--out", "{tmp}/p.png"], "holds no metrics.jsonl"),
    (["plot", "{tmp}/empty", "--lags", "--out", "{tmp}/p.png"], "holds no diagnose.jsonl"),
])
def test_bad_input_to_diagnose_and_plot(tmp_path, capsys, argv, message):
    (tmp_path / "empty").mkdir()
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("rnnlab: error: ") and message in line
    assert not (tmp_path / "p.png").exists()


def test_plot_command_draws_several_runs(tmp_path):
    corpus = write_chars(tmp_path / "c.txt")
    for lr in ("0.01", "0.003"):
        assert main(["train", corpus, "--out", str(tmp_path / lr), "--format", "chars", "--hidden", "8",
                     "--embed", "4", "--batch-size", "4", "--bptt", "16", "--max-steps", "20", "--eval-every",
                     "10", "--lr", lr, "--quiet"]) == 0
    out = tmp_path / "curves.png"
    assert main(["plot", str(tmp_path / "0.01"), str(tmp_path / "0.003"), "--out", str(out), "--y", "perplexity",
                 "--x", "time"]) == 0
    assert out.read_bytes().startswith(PNG)
