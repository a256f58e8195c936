"""Dropout and tied weights: exact gradients, reproducible masks, the fused step, the trainer."""
import numpy as np
import pytest

from rnnlab import gates
from rnnlab.checkpoint import load_checkpoint
from rnnlab.gradcheck import check_function, check_gate
from rnnlab.model import LanguageModel, ModelConfig, _dropout_masks
from rnnlab.train import TrainConfig, train

QUIET = dict(progress=False, log=lambda *a: None)


def batch(V, T=6, B=3, seed=0):
    gen = np.random.default_rng(seed)
    return gen.integers(0, V, (T, B)), gen.integers(0, V, (T, B))


def write_stream(tmp_path, n=2000, seed=0):
    gen = np.random.default_rng(seed)
    words = [f"w{k}" for k in range(10)]
    ids = gen.integers(0, len(words), n)
    path = tmp_path / "stream.txt"
    path.write_text("\n".join(" ".join(words[i] for i in ids[k:k + 8]) for k in range(0, n, 8)) + "\n",
                    encoding="utf-8")
    return str(path)


def test_the_dropout_gate_against_finite_differences():
    gen = np.random.default_rng(0)
    mask = gates.dropout_mask(gen, (5, 4), 0.4, np.dtype(np.float64))
    errors = check_gate(gates.Dropout(), [gen.standard_normal((5, 4)), mask], [0])
    assert errors["input 0"] < 1e-9


def test_dropout_masks_are_inverted_and_drawn_in_a_fixed_order():
    """Entries are 0 or 1/(1-p), about p of them 0; one generator gives the embedding's mask first,
    then each layer's output below the top, then the top's; the same seed gives the same masks."""
    config = ModelConfig(20, 8, embed_size=5, num_layers=2, dropout=0.25, dtype="float64")
    masks = _dropout_masks(config, 4000, np.dtype(np.float64), np.random.default_rng(3))
    assert [m.shape for m in masks] == [(4000, 5), (4000, 8), (4000, 8)]
    for m in masks:
        assert set(np.unique(m)) == {0.0, 1 / 0.75}
        assert abs((m == 0).mean() - 0.25) < 0.02
    gen = np.random.default_rng(3)
    again = [gates.dropout_mask(gen, shape, 0.25, np.dtype(np.float64)) for shape in ((4000, 5), (4000, 8), (4000, 8))]
    for a, b in zip(masks, again):
        np.testing.assert_array_equal(a, b)
    assert _dropout_masks(ModelConfig(20, 8), 10, np.dtype(np.float32), None) is None


@pytest.mark.parametrize("layout", [dict(embed_size=4, num_layers=2), dict(embed_size=None, bias=False)])
def test_gradients_with_dropout_against_finite_differences(layout):
    """With the masks fixed (the same seed each call) the loss is a function of the parameters
    whose gradient loss_and_grads gives."""
    model = LanguageModel(11, 5, dropout=0.3, dtype="float64", seed=2, **layout)
    inputs, targets = batch(11)

    def run():
        return model.loss_and_grads(inputs, targets, bptt="full", dropout_rng=np.random.default_rng(9))

    errors = check_function(lambda: run().loss, model.params, run().grads, max_entries=25)
    assert max(errors.values()) < 1e-7, errors


def test_dropout_is_on_in_training_only():
    """Training with masks changes the loss; nll, evaluate and log_probs never drop."""
    model = LanguageModel(11, 5, embed_size=4, dropout=0.5, dtype="float64", seed=1)
    plain = LanguageModel.from_config(ModelConfig(11, 5, embed_size=4, dtype="float64"), model.params)
    inputs, targets = batch(11)
    dropped = model.loss_and_grads(inputs, targets, dropout_rng=np.random.default_rng(0)).loss
    again = model.loss_and_grads(inputs, targets, dropout_rng=np.random.default_rng(0)).loss
    other = model.loss_and_grads(inputs, targets, dropout_rng=np.random.default_rng(1)).loss
    clean = plain.loss_and_grads(inputs, targets).loss
    assert dropped == again and dropped != other and dropped != clean
    np.testing.assert_array_equal(model.nll(inputs, targets)[0], plain.nll(inputs, targets)[0])
    np.testing.assert_array_equal(model.log_probs(inputs)[0], plain.log_probs(inputs)[0])
    assert model.evaluate(inputs, targets)[0] == plain.evaluate(inputs, targets)[0]


def test_tied_weights_are_one_parameter_whose_gradient_sums_both_uses():
    tied = LanguageModel(13, 6, embed_size=6, tied=True, dtype="float64", seed=4)
    assert "decoder.weight" not in tied.params and tied.num_params() == sum(
        int(np.prod(s)) for s in tied.config.param_shapes().values())
    untied = LanguageModel.from_config(ModelConfig(13, 6, embed_size=6, dtype="float64"),
                                       {**tied.params, "decoder.weight": tied.params["encoder.weight"].copy()})
    inputs, targets = batch(13)
    a = tied.loss_and_grads(inputs, targets, bptt="chunk", truncate=3)
    b = untied.loss_and_grads(inputs, targets, bptt="chunk", truncate=3)
    assert a.loss == pytest.approx(b.loss, rel=1e-14)
    np.testing.assert_allclose(a.grads["encoder.weight"], b.grads["encoder.weight"] + b.grads["decoder.weight"],
                               rtol=1e-12, atol=1e-15)
    errors = check_function(lambda: tied.loss_and_grads(inputs, targets).loss, tied.params,
                            tied.loss_and_grads(inputs, targets).grads, max_entries=30)
    assert max(errors.values()) < 1e-7, errors


def test_tied_weights_move_to_and_from_a_pytorch_style_state_dict():
    tied = LanguageModel(13, 6, embed_size=6, tied=True, seed=4)
    state = tied.state_dict()
    assert state["decoder.weight"] is state["encoder.weight"]
    again = LanguageModel.from_config(tied.config, state)
    np.testing.assert_array_equal(again.params["encoder.weight"], tied.params["encoder.weight"])
    with pytest.raises(ValueError, match="differs from encoder.weight"):
        LanguageModel.from_config(tied.config, {**state, "decoder.weight": state["encoder.weight"] + 1})
    with pytest.raises(ValueError, match="tied weights need an embedding of the hidden size"):
        ModelConfig(13, 6, embed_size=5, tied=True)


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-11), ("float32", 2e-5)])
@pytest.mark.parametrize("layout", [dict(embed_size=6, tied=True, dropout=0.3),
                                    dict(embed_size=None, tied=True, bias=False),
                                    dict(embed_size=4, num_layers=2, dropout=0.2)])
def test_the_fused_step_with_dropout_and_tied_weights_equals_gradients_then_update(layout, dtype, rtol):
    """The fused step steps the tied table inside the output layer and adds the rows' gradient after;
    the result is plain SGD on the summed gradient, with the same masks. float32: three steps of
    rounding in sums over a few dozen terms (eps 6e-8): 2e-5 relative leaves a wide margin."""
    fused = LanguageModel(1100, 6, dtype=dtype, seed=5, **layout)
    plain = LanguageModel(1100, 6, dtype=dtype, seed=5, **layout)
    for step in range(3):
        inputs, targets = batch(1100, seed=step)
        inputs[1:3, 0] = inputs[0, 0]
        loss, _ = fused.sgd_step(inputs, targets, 0.5, dropout_rng=np.random.default_rng(step))
        res = plain.loss_and_grads(inputs, targets, dropout_rng=np.random.default_rng(step))
        for name, g in res.grads.items():
            plain.params[name] -= 0.5 * g
        assert loss == pytest.approx(res.loss, rel=rtol)
        for name in plain.params:
            np.testing.assert_allclose(fused.params[name], plain.params[name], rtol=rtol, atol=rtol * 1e-2,
                                       err_msg=name)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_run_with_dropout_and_tied_weights_resumes_bit_identically(tmp_path, optimizer):
    """Masks come from (seed, step), so a run stopped mid-epoch and resumed draws the same ones."""
    base = dict(corpus=write_stream(tmp_path), format="tokens", hidden=6, embed=6, tied=True, dropout=0.3,
                batch_size=3, bptt=6, epochs=2, optimizer=optimizer, lr=0.5 if optimizer == "sgd" else 0.01,
                eval_tokens=300)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(TrainConfig(out=str(straight), **base), **QUIET)
    train(TrainConfig(out=str(resumed), max_steps=140, **base), **QUIET)
    assert load_checkpoint(resumed).state["batch"] > 0
    train(TrainConfig(out=str(resumed), max_steps=0), resume=True, **QUIET)
    a, b = load_checkpoint(straight), load_checkpoint(resumed)
    assert sorted(a.params) == sorted(b.params) and "decoder.weight" not in a.params
    for name in a.params:
        assert np.array_equal(a.params[name], b.params[name]), name


def test_training_with_dropout_differs_from_training_without(tmp_path):
    """The trainer really draws masks (a dropout that is never applied would pass the resume test)."""
    base = dict(corpus=write_stream(tmp_path, 600), format="tokens", hidden=6, embed=4, batch_size=2, bptt=5,
                epochs=1, max_steps=8, optimizer="sgd", lr=0.5)
    train(TrainConfig(out=str(tmp_path / "a"), dropout=0.4, **base), **QUIET)
    train(TrainConfig(out=str(tmp_path / "b"), dropout=0.0, **base), **QUIET)
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    assert not np.array_equal(a.params["rnn.weight_hh_l0"], b.params["rnn.weight_hh_l0"])


def test_bad_regularisation_settings_are_refused():
    for bad in (dict(dropout=1.0), dict(dropout=-0.1), dict(tied=True, hidden=8, embed=4), dict(tied="yes")):
        with pytest.raises(ValueError):
            TrainConfig(corpus="x.txt", format="tokens", **bad).resolved()


def test_the_masks_go_where_word_language_model_puts_them():
    """On the embedding output, between the layers and on the top layer's output before the decoder,
    in that order from the generator: the loss equals a literal numpy forward with the same masks."""
    model = LanguageModel(9, 4, embed_size=3, num_layers=2, dropout=0.5, dtype="float64", seed=6)
    inputs, targets = batch(9, T=5, B=2)
    loss = model.loss_and_grads(inputs, targets, dropout_rng=np.random.default_rng(11)).loss
    gen = np.random.default_rng(11)
    masks = [gates.dropout_mask(gen, (10, width), 0.5, np.dtype(np.float64)).reshape(5, 2, width)
             for width in (3, 4, 4)]
    p = model.params
    x = p["encoder.weight"][inputs] * masks[0]  # (T, B, E)
    for k in range(2):
        h, outputs = np.zeros((2, 4)), []
        for t in range(5):
            h = np.tanh(x[t] @ p[f"rnn.weight_ih_l{k}"].T + p[f"rnn.bias_ih_l{k}"] + h @ p[f"rnn.weight_hh_l{k}"].T
                        + p[f"rnn.bias_hh_l{k}"])
            outputs.append(h)
        x = np.stack(outputs) * masks[k + 1]
    z = x @ p["decoder.weight"].T + p["decoder.bias"]
    z -= z.max(axis=2, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=2, keepdims=True))
    total = -np.take_along_axis(logp, targets[:, :, None], axis=2).sum()
    assert loss == pytest.approx(total / 10, rel=1e-13)


def test_the_trainer_draws_each_steps_masks_from_seed_and_step(tmp_path, monkeypatch):
    """Step s draws from default_rng([seed, 1, s]): a new mask every step, the same on resume."""
    import copy

    seen = []
    real = LanguageModel.clipped_sgd_step  # the trainer's step for SGD with clipping

    def peeking(self, *args, dropout_rng=None, **kw):
        seen.append(copy.deepcopy(dropout_rng).random(2).tolist())
        return real(self, *args, dropout_rng=dropout_rng, **kw)

    monkeypatch.setattr(LanguageModel, "clipped_sgd_step", peeking)
    train(TrainConfig(corpus=write_stream(tmp_path, 600), out=str(tmp_path / "run"), format="tokens", hidden=5,
                      embed=4, dropout=0.2, batch_size=2, bptt=5, epochs=2, max_steps=80, seed=7, clip=1.0),
          **QUIET)
    assert len(seen) == 80
    assert seen == [np.random.default_rng([7, 1, s]).random(2).tolist() for s in range(80)]
