"""The seams: a cell and an output layer plug in through their registries, and nothing else.

A toy cell that carries two state parts, as an LSTM carries (h, c), and a
toy output layer without a fused SGD step are registered for one test each;
the model, the trainer, generation and checkpoints must run them without
knowing them. Corpora are made here, so these run on a fresh clone.
"""
import json

import numpy as np
import pytest

from rnnlab import cells, output
from rnnlab.cells import BPTT_MODES, CELLS, Cell, RNNSequence, SequenceGate
from rnnlab.checkpoint import load_checkpoint
from rnnlab.gradcheck import check_function
from rnnlab.model import LanguageModel, ModelConfig
from rnnlab.optim import LossHalvingSchedule, make_optimizer
from rnnlab.train import TrainConfig, TrainState, step_kind, train

QUIET = dict(progress=False, log=lambda *a: None)


class ShiftedSequence(SequenceGate):
    """A tanh RNN whose every input is shifted by a second carried part c:
    outputs = RNN(xin + c0, h0); the final state is (h_T, c0 + h_T). c reaches
    the loss of the next chunk, so a carried c that is lost or garbled shows."""

    def forward(self, xin, h0, c0, w_hh, b_hh):
        T = self.steps
        B, H = h0.shape
        inner = RNNSequence(T, self.mode, self.truncate)
        out, saved = inner.forward((xin.reshape(T, B, H) + c0).reshape(T * B, H), h0, w_hh, b_hh)
        h_last = inner.final[0]
        self.final = (h_last, c0 + h_last)
        return out, (inner, saved)

    def backward(self, saved, d_out):
        inner, saved = saved
        d_x, d_h0, d_w, d_b = inner.backward(saved, d_out)
        d_c0 = d_x.reshape(self.steps, -1, d_x.shape[1]).sum(axis=0)
        return d_x, d_h0, d_c0, d_w, d_b


SHIFTED = Cell("shifted", gates=1, state=("h", "c"), sequence=ShiftedSequence, bptt_modes=BPTT_MODES,
               summary="a test cell with two state parts")


class UnfusedSoftmax(output.FullSoftmax):
    """The full softmax, declared without a fused SGD step."""

    fused_sgd = False


@pytest.fixture
def shifted_cell(monkeypatch):
    monkeypatch.setitem(cells.CELLS, "shifted", SHIFTED)
    return SHIFTED


@pytest.fixture
def unfused_softmax(monkeypatch):
    monkeypatch.setitem(output.OUTPUT_LAYERS, "unfused", UnfusedSoftmax)
    return UnfusedSoftmax


def write_stream(tmp_path, n=3000, seed=0):
    """A tokens corpus of n words from a small vocabulary with some structure (a word often repeats)."""
    gen = np.random.default_rng(seed)
    words = [f"w{k}" for k in range(12)]
    ids = [0]
    for _ in range(n - 1):
        ids.append(ids[-1] if gen.random() < 0.3 else int(gen.integers(0, len(words))))
    lines = [" ".join(words[i] for i in ids[k:k + 10]) for k in range(0, n, 10)]
    path = tmp_path / "stream.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def test_unknown_cells_and_output_layers_are_refused():
    """A cell name that is not in the registry is an error, not a tanh RNN in disguise."""
    for bad in (dict(cell="transformer"), dict(softmax="hierarchical")):
        with pytest.raises(ValueError, match="not available; choose from"):
            ModelConfig(10, 4, **bad)
    with pytest.raises(ValueError):
        TrainConfig(corpus="x.txt", cell="transformer").resolved()


def test_the_model_runs_the_registered_sequence_gate(monkeypatch):
    """Training and evaluation both run the registry's gate: replacing it is seen by both."""
    calls = []

    class Counting(RNNSequence):
        def forward(self, *args):
            calls.append(self.mode)
            return super().forward(*args)

    monkeypatch.setitem(cells.CELLS, "rnn", Cell("rnn", 1, ("h",), Counting, BPTT_MODES, "counting"))
    model = LanguageModel(9, 4, embed_size=3, num_layers=2, dtype="float64")
    ids = np.arange(8).reshape(4, 2)
    model.loss_and_grads(ids, ids, bptt="chunk", truncate=2)
    model.nll(ids, ids)
    assert calls == ["chunk", "chunk", "full", "full"]


def test_a_two_part_cell_carries_both_parts_through_the_model(shifted_cell):
    model = LanguageModel(11, 5, embed_size=4, cell="shifted", num_layers=2, dtype="float64", seed=1)
    h0, c0 = model.init_hidden(3)
    assert h0.shape == c0.shape == (2, 3, 5) and not h0.any() and not c0.any()
    gen = np.random.default_rng(0)
    inputs, targets = gen.integers(0, 11, (6, 3)), gen.integers(0, 11, (6, 3))
    hidden = tuple(gen.standard_normal((2, 3, 5)) * 0.3 for _ in range(2))
    result = model.loss_and_grads(inputs, targets, hidden=hidden)
    h, c = result.hidden
    # c is c0 + the last h of each layer; evaluation carries the same state
    np.testing.assert_allclose(c, hidden[1] + h, rtol=1e-14)
    nll, final = model.nll(inputs, targets, hidden=hidden)
    np.testing.assert_allclose(final[1], c, rtol=1e-14)
    # the carried c reaches the next call's loss
    first, mid = model.nll(inputs[:2], targets[:2], hidden=hidden)
    np.testing.assert_allclose(first, nll[:2], rtol=1e-14)
    second, _ = model.nll(inputs[2:], targets[2:], hidden=mid)
    without_c, _ = model.nll(inputs[2:], targets[2:], hidden=(mid[0], np.zeros_like(mid[1])))
    assert np.abs(second - without_c).max() > 1e-3
    # the gradient of every parameter, c's path included, against finite differences
    errors = check_function(lambda: model.loss_and_grads(inputs, targets, hidden=hidden).loss,
                            model.params, result.grads, max_entries=20)
    assert max(errors.values()) < 1e-7, errors
    with pytest.raises(ValueError, match="carries 2 state arrays"):
        model.nll(inputs, targets, hidden=(*hidden, hidden[0]))
    with pytest.raises(ValueError, match="state c must be shaped"):
        model.nll(inputs, targets, hidden=(hidden[0], hidden[1][:, :2]))


def test_a_two_part_cell_generates(shifted_cell, tmp_path):
    from rnnlab.generate import generate
    from rnnlab.train import load_trained

    out = tmp_path / "run"
    train(TrainConfig(corpus=write_stream(tmp_path, 600), out=str(out), format="tokens", cell="shifted",
                      hidden=6, embed=4, batch_size=2, bptt=5, epochs=1, max_steps=5), **QUIET)
    run = load_trained(out)
    assert run.model.config.cell == "shifted"
    texts = generate(run.model, run.vocab, run.format, n=2, max_length=7, seed=3)
    assert len(texts) == 2 and texts == generate(run.model, run.vocab, run.format, n=2, max_length=7, seed=3)


def test_a_two_part_cell_resumes_mid_epoch_bit_identically(shifted_cell, tmp_path):
    """The trainer saves both parts of the carried state mid-epoch and restores them."""
    corpus = write_stream(tmp_path)
    base = dict(corpus=corpus, format="tokens", cell="shifted", layers=1, hidden=6, embed=4, batch_size=3, bptt=7,
                epochs=2, optimizer="adam", lr=0.01, eval_tokens=300)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(TrainConfig(out=str(straight), **base), **QUIET)
    train(TrainConfig(out=str(resumed), max_steps=170, **base), **QUIET)
    saved = load_checkpoint(resumed).state
    assert saved["batch"] > 0 and np.asarray(saved["hidden"]).shape == (2, 1, 3, 6)
    train(TrainConfig(out=str(resumed), max_steps=0), resume=True, **QUIET)
    a, b = load_checkpoint(straight), load_checkpoint(resumed)
    assert a.state["step"] == b.state["step"]
    for name in a.params:
        assert np.array_equal(a.params[name], b.params[name]), name


def test_the_way_to_step_is_chosen_in_one_place(unfused_softmax):
    """Plain SGD and an output layer that has a fused step: fused without clipping, clipped with it;
    any other optimiser, or a layer without the fused step: gradients."""
    def state(optimizer, softmax="full"):
        model = LanguageModel(7, 3, softmax=softmax)
        opt = make_optimizer(optimizer, model.params, 0.1)
        return TrainState(model, opt, LossHalvingSchedule(opt))

    cfg = TrainConfig(corpus="x.txt", format="tokens")
    unclipped, clipped = (TrainConfig(**{**cfg.__dict__, "clip": c}).resolved() for c in (0.0, 1.0))
    assert step_kind(unclipped, state("sgd")) == "fused"
    assert step_kind(clipped, state("sgd")) == "clipped"
    for name in ("momentum", "adagrad", "adam"):
        assert step_kind(unclipped, state(name)) == "gradients"
        assert step_kind(clipped, state(name)) == "gradients"
    assert step_kind(unclipped, state("sgd", "unfused")) == "gradients"
    assert step_kind(clipped, state("sgd", "unfused")) == "gradients"


def test_an_output_layer_without_a_fused_step_trains_by_gradients(unfused_softmax, tmp_path, monkeypatch):
    """The trainer asks the output layer: without a fused step, plain SGD goes through the gradients,
    to the same weights as the fused step of the full softmax (float64)."""
    corpus = write_stream(tmp_path, 800)
    base = dict(corpus=corpus, format="tokens", hidden=6, embed=4, batch_size=2, bptt=6, epochs=1,
                max_steps=12, optimizer="sgd", lr=0.5, clip=0.0, dtype="float64")
    fused_calls = []
    real = LanguageModel.sgd_step
    monkeypatch.setattr(LanguageModel, "sgd_step",
                        lambda self, *a, **k: fused_calls.append(1) or real(self, *a, **k))
    train(TrainConfig(out=str(tmp_path / "full"), **base), **QUIET)
    assert len(fused_calls) == 12
    train(TrainConfig(out=str(tmp_path / "unfused"), softmax="unfused", **base), **QUIET)
    assert len(fused_calls) == 12
    a, b = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "unfused")
    assert json.loads(json.dumps(b.config))["softmax"] == "unfused"
    for name in a.params:
        np.testing.assert_allclose(b.params[name], a.params[name], rtol=1e-10, atol=1e-13, err_msg=name)
    model = LanguageModel(7, 3, softmax="unfused")
    with pytest.raises(ValueError, match="no fused SGD step"):
        model.sgd_step(np.zeros((2, 1), dtype=int), np.zeros((2, 1), dtype=int), 0.1)


def test_evaluation_and_generation_go_through_the_output_layer(unfused_softmax, monkeypatch):
    """nll, evaluate, log_probs and step ask the model's output layer, not the decoder's arrays."""
    calls = []
    monkeypatch.setattr(UnfusedSoftmax, "nll", lambda self, p, h, t: calls.append("nll") or
                        output.FullSoftmax.nll(self, p, h, t))
    monkeypatch.setattr(UnfusedSoftmax, "log_probs", lambda self, p, h: calls.append("log_probs") or
                        output.FullSoftmax.log_probs(self, p, h))
    model = LanguageModel(7, 3, softmax="unfused", dtype="float64")
    ids = np.arange(6).reshape(3, 2)
    model.nll(ids, ids)
    model.evaluate(ids, ids)
    model.log_probs(ids)
    model.step(np.array([1, 2]))
    assert calls == ["nll", "nll", "log_probs", "log_probs"]


def test_parameter_shapes_come_from_the_registries():
    """A cell with G gate blocks gives (G*H, .) recurrent weights and a (V, G*H) encoder without an
    embedding layer; the output layer's shapes come last."""
    wide = Cell("wide", gates=3, state=("h",), sequence=RNNSequence, bptt_modes=BPTT_MODES, summary="")
    assert wide.param_shapes(1, 4, 5, True) == {"rnn.weight_ih_l1": (15, 4), "rnn.weight_hh_l1": (15, 5),
                                                "rnn.bias_ih_l1": (15,), "rnn.bias_hh_l1": (15,)}
    assert wide.param_shapes(0, None, 5, False) == {"rnn.weight_hh_l0": (15, 5)}
    shapes = ModelConfig(20, 5, embed_size=None, num_layers=2).param_shapes()
    assert list(shapes) == ["encoder.weight", "rnn.weight_hh_l0", "rnn.bias_ih_l0", "rnn.bias_hh_l0",
                            "rnn.weight_ih_l1", "rnn.weight_hh_l1", "rnn.bias_ih_l1", "rnn.bias_hh_l1",
                            "decoder.weight", "decoder.bias"]
    assert set(CELLS) >= {"rnn"} and all(name == cell.name for name, cell in CELLS.items())
