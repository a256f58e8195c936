"""Everything downstream of the model works for every cell in the registry: train, resume, eval,
generate, score, the command line. Corpora are written here, so this runs on a fresh clone."""
import json
import math

import numpy as np
import pytest

from rnnlab.cells import CELLS
from rnnlab.checkpoint import load_checkpoint
from rnnlab.cli import main
from rnnlab.generate import generate, score_lines
from rnnlab.train import TrainConfig, load_trained, train

QUIET = dict(progress=False, log=lambda *a: None)
WORDS = "the a cat dog sat ran on under mat log big small and it saw".split()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    gen = np.random.default_rng(0)
    lines = [" ".join(gen.choice(WORDS, gen.integers(3, 10))) for _ in range(150)]
    path = tmp_path_factory.mktemp("corpus") / "words.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_a_stream_run_with_depth_dropout_and_tied_weights_resumes_exactly(cell, corpus, tmp_path):
    base = dict(corpus=corpus, format="tokens", cell=cell, layers=2, hidden=8, embed=8, tied=True, dropout=0.2,
                batch_size=4, bptt=6, epochs=2, optimizer="sgd", lr=2.0, clip=0.25, schedule="plateau",
                eval_every=9)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(TrainConfig(out=str(straight), **base), **QUIET)
    train(TrainConfig(out=str(resumed), max_steps=31, **base), **QUIET)
    saved = load_checkpoint(resumed).state
    parts = len(CELLS[cell].state)
    assert np.asarray(saved["hidden"]).shape == ((2, 4, 8) if parts == 1 else (parts, 2, 4, 8))
    train(TrainConfig(out=str(resumed), max_steps=0), resume=True, **QUIET)
    a, b = load_checkpoint(straight), load_checkpoint(resumed)
    assert "decoder.weight" not in a.params and "rnn.weight_hh_l1" in a.params
    assert a.params["rnn.weight_hh_l1"].shape == (CELLS[cell].gates * 8, 8)
    for name in a.params:
        assert np.array_equal(a.params[name], b.params[name]), name
    assert a.optimizer_meta == b.optimizer_meta and a.state["schedule"] == b.state["schedule"]
    assert a.state["schedule"]["name"] == "plateau"


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_the_command_line_trains_evaluates_generates_and_scores_every_cell(cell, corpus, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", corpus, "--out", str(out), "--format", "tokens", "--cell", cell, "--hidden", "8",
                 "--embed", "6", "--layers", "2", "--dropout", "0.1", "--batch-size", "4", "--bptt", "6",
                 "--max-steps", "20", "--optimizer", "adam", "--lr", "0.01", "--quiet"]) == 0
    assert main(["eval", str(out), corpus, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert 0 < result["loss"] < math.log(len(WORDS) + 3) and result["perplexity"] == pytest.approx(
        math.exp(result["loss"]))
    assert main(["generate", str(out), "--prompt", "the cat", "-n", "2", "--max-length", "5", "--top-k", "3",
                 "--temperature", "0.7", "--seed", "1"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("the cat")
    run = load_trained(out)
    assert run.model.config.cell == cell and run.model.config.dropout == 0.1
    once = generate(run.model, run.vocab, run.format, n=2, max_length=5, seed=4)
    assert once == generate(run.model, run.vocab, run.format, n=2, max_length=5, seed=4)  # dropout is off
    (logprob, count, ppl), = score_lines(run.model, run.vocab, ["the cat sat"], run.format)
    assert count == 4 and logprob < 0 and ppl == pytest.approx(math.exp(-logprob / count))


def test_flag_combinations_that_cannot_work_are_one_line_errors(corpus, tmp_path, capsys):
    for argv in (["--tied", "--hidden", "8", "--embed", "6"], ["--tied", "--cell", "lstm", "--embed", "0"],
                 ["--dropout", "1"], ["--layers", "2", "--bptt-mode", "window"],
                 ["--cell", "transformer"], ["--schedule", "cosine"]):
        assert main(["train", corpus, "--out", str(tmp_path / "x"), "--format", "tokens", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("rnnlab: error:") and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()
