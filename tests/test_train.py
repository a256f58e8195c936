"""The training loop: run files, learning, exact resume, refusals, evaluation."""
import hashlib
import json
import math
import warnings

import numpy as np
import pytest

from rnnlab.checkpoint import load_checkpoint
from rnnlab.data.prepare import prepare_corpus
from rnnlab.errors import CheckpointError, RnnlabError
from rnnlab.model import LanguageModel
from rnnlab.train import TrainConfig, epoch_batches, evaluate, load_trained, train

QUIET = dict(progress=False, log=lambda *a: None)
pytestmark = pytest.mark.filterwarnings("ignore::rnnlab.data.readers.TruncatedCorpusWarning")


@pytest.fixture(scope="module")
def shakespeare_slice(data_dir, tmp_path_factory):
    """The first 6,000 characters of Tiny Shakespeare."""
    path = tmp_path_factory.mktemp("chars") / "shakespeare.txt"
    path.write_text((data_dir / "tinyshakespeare.txt").read_text(encoding="utf-8")[:6000], encoding="utf-8")
    return str(path)


def snapshot(directory):
    """sha256 of every file in a directory: to prove nothing was touched."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_tutorial_training_writes_the_run_and_the_loss_falls(reddit, tmp_path):
    out = tmp_path / "run"
    # The tutorial's setup (one sentence per step in corpus order, window BPTT of 4, plain SGD,
    # no biases) at a small size.
    result = train(TrainConfig(corpus=reddit, out=str(out), vocab_size=500, hidden=16, epochs=2, lr=0.01,
                                       valid_fraction=0.5), **QUIET)
    assert result.config.batch_size == 1 and result.config.bptt_mode == "window" and result.config.bptt == 4
    assert result.config.optimizer == "sgd" and result.config.bias is False and not result.config.shuffle

    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [0, 1, 2]
    for i, m in enumerate(lines):
        # the fused SGD step forms no gradient, so no gradient norms; the update ratio is sampled
        sampled = {"update_ratio"} if i else set()
        assert set(m) == {"epoch", "step", "tokens", "train_loss", "valid_loss", "perplexity", "lr",
                          "tokens_per_s", "wall_time", *sampled}
        assert m["perplexity"] == pytest.approx(math.exp(m["valid_loss"]))
    losses = [m["train_loss"] for m in lines]
    assert losses[0] == pytest.approx(math.log(500), abs=0.05)  # untrained: about uniform
    assert losses[0] > losses[1] > losses[2]
    assert lines[-1]["valid_loss"] < lines[0]["valid_loss"]
    steps = [m["step"] for m in lines]
    assert steps[1] == steps[2] - steps[1] == 1062 // 2  # one step per training sentence
    assert lines[1]["tokens_per_s"] > 0 and lines[0]["tokens_per_s"] is None

    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ckpt = load_checkpoint(out)
    assert ckpt.state["epoch"] == 2 and ckpt.state["step"] == steps[-1] and ckpt.state["batch"] == 0
    assert ckpt.state["train_config"]["corpus"] == reddit
    saved_vocab = json.loads((out / "vocab.json").read_text(encoding="utf-8"))
    assert saved_vocab == ckpt.vocab and len(saved_vocab["tokens"]) == 500
    for name, value in result.model.params.items():
        assert np.array_equal(ckpt.params[name], value)
    run = load_trained(out)
    assert run.format == "csv" and run.vocab.id_to_token == saved_vocab["tokens"]
    assert run.model.config == result.model.config


def _same_run(a, b):
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    assert set(ca.params) == set(cb.params)
    for name in ca.params:
        assert np.array_equal(ca.params[name], cb.params[name]), name
    for name in ca.optimizer_arrays:
        assert np.array_equal(ca.optimizer_arrays[name], cb.optimizer_arrays[name]), name
    assert ca.optimizer_meta == cb.optimizer_meta
    assert evaluations(a) == evaluations(b)


def evaluations(out):
    """The evaluation rows of metrics.jsonl without their timing fields (event rows left out)."""
    return [{k: v for k, v in m.items() if k not in ("tokens_per_s", "wall_time")}
            for m in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "event" not in m]


def test_resume_is_bit_identical_sentence_mode(reddit, tmp_path):
    # Shuffled batches of 16 sentences, Adam, and the tutorial's halving: all state must survive.
    base = dict(corpus=reddit, vocab_size=300, hidden=8, batch_size=16, optimizer="adam", lr=0.01)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(TrainConfig(out=str(straight), epochs=2, **base), **QUIET)
    train(TrainConfig(out=str(resumed), epochs=1, **base), **QUIET)
    first = load_checkpoint(resumed).params["decoder.weight"].copy()
    result = train(TrainConfig(out=str(resumed), epochs=2), resume=True, **QUIET)
    assert result.config.batch_size == 16 and result.config.shuffle  # the saved config, not the defaults
    assert not np.array_equal(first, result.model.params["decoder.weight"])
    _same_run(straight, resumed)


def test_resume_mid_epoch_is_bit_identical_stream_mode(shakespeare_slice, tmp_path):
    # A step budget that stops inside an epoch: the carried hidden state is saved and restored.
    base = dict(corpus=shakespeare_slice, format="chars", hidden=16, embed=8, batch_size=4, bptt=16,
                eval_tokens=500)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(TrainConfig(out=str(straight), epochs=2, **base), **QUIET)
    stopped = train(TrainConfig(out=str(resumed), epochs=2, max_steps=100, **base), **QUIET)
    n_batches = epoch_batches(prepare_corpus(shakespeare_slice, "chars"), stopped.config, 0)[0]
    assert stopped.step == 100 and n_batches < 100 < 2 * n_batches and 1 < stopped.epoch < 2
    assert load_checkpoint(resumed).state["hidden"] is not None
    train(TrainConfig(out=str(resumed), max_steps=0), resume=True, **QUIET)
    # Metrics differ in the extra mid-epoch line of the stopped run; parameters must not.
    ca, cb = load_checkpoint(straight), load_checkpoint(resumed)
    assert ca.state["step"] == cb.state["step"]
    for name in ca.params:
        assert np.array_equal(ca.params[name], cb.params[name]), name


def test_existing_checkpoint_is_refused_without_force(reddit, tmp_path):
    out = tmp_path / "run"
    config = TrainConfig(corpus=reddit, out=str(out), vocab_size=200, hidden=4, batch_size=64, epochs=1)
    train(config, **QUIET)
    before = snapshot(out)
    with pytest.raises(RnnlabError, match="already holds a checkpoint"):
        train(config, **QUIET)
    with pytest.raises(RnnlabError, match="cannot resume with hidden 5"):
        train(TrainConfig(out=str(out), hidden=5), resume=True, **QUIET)
    with pytest.raises(RnnlabError, match="no such file"):
        train(TrainConfig(out=str(out), corpus=str(tmp_path / "missing.csv")), resume=True, **QUIET)
    assert snapshot(out) == before
    train(TrainConfig(corpus=reddit, out=str(out), vocab_size=200, hidden=4, batch_size=64, epochs=2, seed=3),
          force=True, **QUIET)
    assert snapshot(out) != before
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3  # the old run's 2 lines are gone


def test_interrupted_training_leaves_the_checkpoint_intact(reddit, tmp_path, monkeypatch):
    out = tmp_path / "run"
    train(TrainConfig(corpus=reddit, out=str(out), vocab_size=200, hidden=4, batch_size=32, epochs=1), **QUIET)
    before = snapshot(out)
    calls = {"n": 0}

    def interrupting(real):  # the fifth training step (fused SGD or gradients) is interrupted
        def method(self, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 5:
                raise KeyboardInterrupt
            return real(self, *args, **kwargs)
        return method

    for name in ("sgd_step", "loss_and_grads"):
        monkeypatch.setattr(LanguageModel, name, interrupting(getattr(LanguageModel, name)))
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(out=str(out), epochs=3), resume=True, **QUIET)
    assert snapshot(out) == before
    assert load_checkpoint(out).state["epoch"] == 1


def test_resume_without_checkpoint_fails(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint directory"):
        train(TrainConfig(out=str(tmp_path / "nothing")), resume=True, **QUIET)
    assert not (tmp_path / "nothing").exists()


def test_batch_size_one_follows_the_corpus_order(reddit):
    corpus = prepare_corpus(reddit, "csv", 300)
    cfg = TrainConfig(corpus=reddit, vocab_size=300).resolved()
    n, batches = epoch_batches(corpus, cfg, epoch=3)
    seen = [np.concatenate([x[:1, 0], y[:, 0]]) for x, y, _ in batches]
    assert n == corpus.num_sentences == len(seen)
    assert all(np.array_equal(s, t) for s, t in zip(seen, corpus.sentences))
    shuffled = TrainConfig(corpus=reddit, vocab_size=300, batch_size=8).resolved()
    orders = [[x.tobytes() for x, _, _ in epoch_batches(corpus, shuffled, epoch=e)[1]] for e in (0, 0, 1)]
    assert orders[0] == orders[1] != orders[2]  # a function of (seed, epoch) alone


def test_evaluate_scores_every_next_token(shakespeare_slice):
    from rnnlab.model import LanguageModel

    corpus = prepare_corpus(shakespeare_slice, "chars")
    model = LanguageModel(len(corpus.vocab), 8, embed_size=4, seed=1)
    total, count = evaluate(model, corpus)
    streams = 6  # 6,000 characters: 6 streams of 1,000
    rows = corpus.num_tokens // streams
    assert count == streams * (rows - 1)
    ids = np.asarray(corpus.ids[: rows * streams]).reshape(streams, rows).T
    nll, _ = model.nll(ids[:-1], ids[1:])
    assert total == pytest.approx(float(nll.sum(dtype=np.float64)), rel=1e-6)
    capped_total, capped = evaluate(model, corpus, max_tokens=600)
    assert capped == streams * (600 // streams)


def test_config_defaults_and_validation():
    chars = TrainConfig(corpus="x.txt", format="chars").resolved()
    assert (chars.optimizer, chars.bptt_mode, chars.bias, chars.shuffle) == ("adam", "chunk", True, False)
    tokens = TrainConfig(corpus="x.txt", format="tokens").resolved()  # word_language_model's LSTM and recipe
    assert (tokens.cell, tokens.layers, tokens.hidden, tokens.embed, tokens.dropout) == ("lstm", 2, 200, 200, 0.2)
    assert (tokens.optimizer, tokens.lr, tokens.clip, tokens.schedule) == ("sgd", 20.0, 0.25, "plateau")
    sentences = TrainConfig(corpus="x.txt", format="text").resolved()  # the tutorial's
    assert (sentences.cell, sentences.schedule, sentences.dropout, sentences.layers) == ("rnn", "halve-on-rise", 0.0, 1)
    assert TrainConfig(corpus="a.CSV").resolved().format == "csv"
    assert TrainConfig(corpus="a.txt").resolved().format == "text"
    for bad in (dict(hidden=-5), dict(hidden=0), dict(lr=-1.0), dict(valid_fraction=1.0), dict(bptt_mode="x"),
                dict(layers=2, bptt_mode="window"), dict(format="pdf"), dict(clip=float("nan"))):
        with pytest.raises(ValueError):
            TrainConfig(corpus="x.txt", **bad).resolved()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TrainConfig(corpus="x.txt", layers=2, bptt_mode="chunk").resolved()


@pytest.mark.parametrize("batch_size,extra", [(4, {}), (8, {"format": "text", "bptt": 6})])
def test_plain_sgd_takes_the_fused_step_and_matches_the_unfused_one(reddit, tmp_path, monkeypatch, batch_size,
                                                                     extra):
    """SGD without momentum or clipping trains through LanguageModel.sgd_step, to the same weights."""
    from rnnlab import optim

    base = dict(corpus=reddit, vocab_size=150, hidden=6, batch_size=batch_size, epochs=1, max_steps=6,
                optimizer="sgd", lr=0.05, clip=0.0, dtype="float64", **extra)
    calls = {"fused": 0}
    real = LanguageModel.sgd_step

    def counting(self, *args, **kwargs):
        calls["fused"] += 1
        return real(self, *args, **kwargs)

    monkeypatch.setattr(LanguageModel, "sgd_step", counting)
    train(TrainConfig(out=str(tmp_path / "fused"), **base), **QUIET)
    assert calls["fused"] == 6
    monkeypatch.setattr(optim.SGD, "plain", property(lambda self: False))
    train(TrainConfig(out=str(tmp_path / "plain"), **base), **QUIET)
    assert calls["fused"] == 6
    fused, plain = load_trained(tmp_path / "fused").model, load_trained(tmp_path / "plain").model
    for name, value in plain.params.items():
        np.testing.assert_allclose(fused.params[name], value, rtol=1e-10, atol=1e-13, err_msg=name)
