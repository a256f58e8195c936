"""The class and adaptive output layers through the trainer and the command line: the cut points
chosen and saved, exact resume, every downstream command, and bad settings refused."""
import json
from pathlib import Path

import numpy as np
import pytest

from rnnlab import api
from rnnlab.adaptive_softmax import default_cutoffs
from rnnlab.checkpoint import load_checkpoint
from rnnlab.class_softmax import class_cutoffs, default_classes
from rnnlab.cli import main
from rnnlab.train import TrainConfig, train

QUIET = dict(progress=False, log=lambda *a: None)


def write_zipf(path, n_tokens=4000, vocab=300, seed=0):
    """A tokens corpus of Zipf-distributed words, 12 to a line."""
    gen = np.random.default_rng(seed)
    ranks = np.minimum(gen.zipf(1.2, n_tokens), vocab) - 1
    words = [f"w{r}" for r in ranks]
    Path(path).write_text("\n".join(" ".join(words[i:i + 12]) for i in range(0, n_tokens, 12)) + "\n")
    return str(path)


def small(**kw):
    return {**dict(format="tokens", cell="lstm", layers=1, hidden=16, embed=16, dropout=0.0, batch_size=4,
                   bptt=8, epochs=2, eval_every=5), **kw}


def test_the_class_layer_takes_its_classes_from_the_vocabulary_counts(tmp_path):
    corpus = write_zipf(tmp_path / "z.txt")
    result = train(TrainConfig(corpus=corpus, out=str(tmp_path / "run"), softmax="class", **small()), **QUIET)
    counts, V = result.vocab.counts, len(result.vocab)
    assert result.model.config.cutoffs == class_cutoffs(counts, default_classes(V))
    frequency = train(TrainConfig(corpus=corpus, out=str(tmp_path / "f"), softmax="class", classes=7,
                                  class_mass="frequency", **small(epochs=1)), **QUIET)
    assert frequency.model.config.cutoffs == class_cutoffs(counts, 7, mass="frequency")
    assert load_checkpoint(tmp_path / "f").config["cutoffs"] == list(frequency.model.config.cutoffs)


def test_the_adaptive_layer_takes_given_or_default_cutoffs(tmp_path):
    corpus = write_zipf(tmp_path / "z.txt")
    given = train(TrainConfig(corpus=corpus, out=str(tmp_path / "a"), softmax="adaptive", cutoffs=(20, 90),
                              div_value=2.0, head_bias=True, **small(epochs=1)), **QUIET)
    config = given.model.config
    assert (config.cutoffs, config.div_value, config.head_bias) == ((20, 90), 2.0, True)
    assert given.model.params["decoder.tail.1.0.weight"].shape == (16 // 4, 16)
    fallback = train(TrainConfig(corpus=corpus, out=str(tmp_path / "b"), softmax="adaptive", **small(epochs=1)),
                     **QUIET)
    assert fallback.model.config.cutoffs == default_cutoffs(len(fallback.vocab))


def test_default_cutoffs_are_a_shortlist_of_2000_then_five_times_as_far():
    assert default_cutoffs(13777) == default_cutoffs(100_000) == (2000, 10000)
    assert default_cutoffs(9000) == (2000,)  # 10000 would pass V
    assert default_cutoffs(4000) == (1000,)  # a quarter of a smaller vocabulary
    assert default_cutoffs(3) == (2,) and default_cutoffs(2) == (1,)


def test_the_adaptive_layer_has_its_own_defaults_in_the_trainer():
    """A head bias, and in the tokens recipe half the rate; what is given wins; other layers keep theirs."""
    base = dict(corpus="x.txt", format="tokens")
    adaptive = TrainConfig(softmax="adaptive", **base).resolved()
    assert adaptive.head_bias is True and adaptive.lr == 10.0
    full, cut = TrainConfig(**base).resolved(), TrainConfig(softmax="class", **base).resolved()
    assert full.lr == cut.lr == 20.0 and full.head_bias is cut.head_bias is False
    given = TrainConfig(softmax="adaptive", head_bias=False, lr=3.0, **base).resolved()
    assert (given.head_bias, given.lr) == (False, 3.0)
    chars = TrainConfig(corpus="x.txt", format="chars", softmax="adaptive").resolved()
    assert chars.head_bias and chars.lr == TrainConfig(corpus="x.txt", format="chars").resolved().lr


@pytest.mark.parametrize("softmax", ["class", "adaptive"])
@pytest.mark.parametrize("optimizer,clip", [("sgd", 0.0), ("sgd", 0.5), ("adam", 0.5)])  # fused, clipped, gradients
def test_resume_mid_epoch_is_bit_identical(tmp_path, softmax, optimizer, clip):
    corpus = write_zipf(tmp_path / "z.txt")
    cfg = dict(corpus=corpus, softmax=softmax, optimizer=optimizer, clip=clip, lr=1.0 if optimizer == "sgd" else 0.01,
               **small())
    straight = train(TrainConfig(out=str(tmp_path / "s"), **cfg), **QUIET)
    train(TrainConfig(out=str(tmp_path / "r"), max_steps=straight.step // 2 + 1, **cfg), **QUIET)
    train(TrainConfig(out=str(tmp_path / "r"), max_steps=0), resume=True, **QUIET)
    a, b = load_checkpoint(tmp_path / "s"), load_checkpoint(tmp_path / "r")
    assert a.state["step"] == b.state["step"]
    for name in a.params:
        assert np.array_equal(a.params[name], b.params[name]), name


@pytest.mark.parametrize("softmax", ["class", "adaptive"])
def test_every_command_reads_the_cut_layers(tmp_path, capsys, softmax):
    corpus = write_zipf(tmp_path / "z.txt")
    out = tmp_path / "run"
    assert main(["train", corpus, "--out", str(out), "--format", "tokens", "--softmax", softmax, "--hidden", "16",
                 "--embed", "16", "--layers", "1", "--max-steps", "10", "--quiet"]) == 0
    run = api.load(out)
    probs = np.exp(run.model.log_probs(np.array([[1, 2, 3]]).T)[0])
    assert np.allclose(probs.sum(axis=-1), 1.0, atol=1e-5)  # a full distribution, on request
    capsys.readouterr()
    assert main(["eval", str(out), corpus, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == run.evaluate(corpus)._asdict()
    assert main(["generate", str(out), "--max-length", "8", "--top-k", "5", "--temperature", "0.7"]) == 0
    words = capsys.readouterr().out.split()  # 8 tokens, <eos> shown as a line end
    assert words and set(words) <= set(run.vocab.id_to_token)
    (score,) = run.score(["w1 w2 w3"])
    assert score.tokens == 4 and np.isfinite(score.logprob)


@pytest.mark.parametrize("flags,message", [
    (["--softmax", "adaptive", "--cutoffs", "20,5000"], "cutoffs must lie in"),
    (["--softmax", "class", "--classes", "5000"], "5000 classes for"),
    (["--softmax", "adaptive", "--tied"], "cannot tie its weights to the encoder: its tail"),
    (["--classes", "5"], "--classes is a setting of --softmax class"),
    (["--softmax", "class", "--cutoffs", "5"], "--cutoffs is a setting of --softmax adaptive"),
    (["--softmax", "adaptive", "--cutoffs", "4,2"], "cutoffs must be positive and increasing"),
    (["--softmax", "adaptive", "--cutoffs", "10", "--div-value", "100"], "projection width"),
])
def test_settings_that_do_not_fit_the_vocabulary_are_one_line(tmp_path, capsys, flags, message):
    corpus = write_zipf(tmp_path / "z.txt")
    out = tmp_path / "run"
    assert main(["train", corpus, "--out", str(out), "--format", "tokens", "--hidden", "16", "--embed", "16",
                 "--quiet"] + flags) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("rnnlab: error: ") and message in line
    assert not out.exists()
