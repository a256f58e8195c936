"""The output layers that cut the vocabulary: the class-based softmax and the adaptive softmax.

Exact, normalised probabilities; gradients against finite differences (the
fused gate alone and through whole models); the class layer against a
literal, slow implementation of the paper's formula; the fused SGD step
against gradients then an update; the class cut points from counts; and the
configurations that must be refused.
"""
import numpy as np
import pytest

from rnnlab import LanguageModel, ModelConfig, two_level
from rnnlab.adaptive_softmax import AdaptiveSoftmax, from_module_state, module_state, projection_widths
from rnnlab.class_softmax import ClassSoftmax, class_cutoffs, default_classes
from rnnlab.gradcheck import ModelCase, check_function, check_model
from rnnlab.graph import Tape

LAYERS = {  # (softmax, V, H, settings)
    "class": ("class", 13, 4, dict(cutoffs=(1, 3, 5, 6, 9))),  # classes of one word: [0, 1), [5, 6)
    "class, no bias": ("class", 13, 4, dict(cutoffs=(2, 7), bias=False)),
    "adaptive": ("adaptive", 13, 8, dict(cutoffs=(4, 7, 10), div_value=2.0)),
    "adaptive, head bias": ("adaptive", 13, 8, dict(cutoffs=(4, 7, 10), div_value=2.0, head_bias=True)),
    "adaptive, div 1": ("adaptive", 13, 5, dict(cutoffs=(3,), div_value=1.0, head_bias=True)),
}


def make_layer(name, dtype=np.float64, seed=0, bound=0.8):
    """The layer, its parameters (by name) and its config."""
    softmax, V, H, settings = LAYERS[name]
    config = ModelConfig(V, H, softmax=softmax, **settings)
    layer = config.output_layer()
    return layer, layer.init_params(np.random.default_rng(seed), np.dtype(dtype), bound), config


def make_rows(config, N=30, seed=1, masked=False, dtype=np.float64):
    """hidden (N, H), targets (N,) over every id, weights (N,) (some 0 when masked)."""
    gen = np.random.default_rng(seed)
    hidden = np.tanh(gen.standard_normal((N, config.hidden_size)) * 1.5).astype(dtype)
    targets = gen.integers(0, config.vocab_size, N)
    targets[:config.vocab_size] = np.arange(min(N, config.vocab_size))  # every id at least once
    weights = gen.random(N).astype(dtype)
    if masked:
        weights[gen.random(N) < 0.3] = 0
    return hidden, targets, weights


class LossRun:
    """The layer's training loss on a tape, its hidden gradient and its parameters' gradients."""

    def __init__(self, layer, params, hidden, targets, weights, sgd_lr=None):
        tape = Tape()
        nodes = {name: tape.param(value, name) for name, value in params.items()}
        hidden_node = tape.param(hidden, "hidden")
        loss = layer.loss(tape, hidden_node, nodes, targets, weights, sgd_lr)
        tape.backward(loss)
        self.loss = float(loss.value)
        self.d_hidden = hidden_node.grad
        self.grads = {name: node.grad for name, node in nodes.items()}


def loss_only(layer, params, hidden, targets, weights):
    return LossRun(layer, params, hidden, targets, weights).loss


@pytest.fixture(params=[0, two_level.MERGE_WORK, 1 << 40], ids=["unmerged", "merged", "all merged"])
def merge_work(request, monkeypatch):
    """Blocks of one cluster each, as the layer merges them, or as many clusters per block as fit."""
    monkeypatch.setattr(two_level, "MERGE_WORK", request.param)
    return request.param


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("masked", [False, True])
def test_gate_gradients_match_finite_differences(name, masked, merge_work):
    layer, params, config = make_layer(name)
    hidden, targets, weights = make_rows(config, masked=masked)
    run = LossRun(layer, params, hidden, targets, weights)
    arrays = {"hidden": hidden, **params}
    analytic = {"hidden": run.d_hidden, **run.grads}
    errors = check_function(lambda: loss_only(layer, params, hidden, targets, weights), arrays, analytic)
    assert max(errors.values()) < 1e-8, errors


def test_merged_blocks_are_made():
    """The 'merged' case above is not vacuous: neighbouring classes share a product."""
    layer, _, config = make_layer("class")
    _, targets, _ = make_rows(config)
    routes = two_level.route(layer.layout, targets)
    blocks = two_level.plan_blocks(layer.layout, routes.starts, config.hidden_size)
    assert any(block.merged for block in blocks)
    assert len(blocks) < len(set(routes.clusters.tolist()))


MODELS = {
    "rnn, class": dict(cell="rnn", softmax="class", cutoffs=(2, 3, 7)),
    "rnn, class, tied": dict(cell="rnn", softmax="class", cutoffs=(2, 3, 7), tied=True),
    "lstm, class": dict(cell="lstm", softmax="class", cutoffs=(1, 4, 8)),
    "rnn, adaptive": dict(cell="rnn", softmax="adaptive", cutoffs=(3, 7), div_value=2.0, head_bias=True),
    "lstm, adaptive": dict(cell="lstm", softmax="adaptive", cutoffs=(4, 6), div_value=2.0),
}


def make_model(name, V=11, H=5, dtype="float64", seed=0, scale=True):
    embed = H if MODELS[name].get("tied") else 4
    model = LanguageModel(V, H, embed_size=embed, num_layers=2, dtype=dtype, seed=seed, **MODELS[name])
    if scale:  # gradients well above the differences' rounding noise (see gradcheck.model_cases)
        model.params["encoder.weight"] *= 5
        for param in model.output.param_shapes():
            if not param.endswith(".bias"):
                model.params[param] *= 10
    return model


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("masked", [False, True])
def test_model_gradients_match_finite_differences_in_chunks(name, masked):
    """Two layers, chunked BPTT: every parameter through the whole model (the differences run the
    layer's forward-only nll, so this checks nll against the training loss too)."""
    case = ModelCase(name, make_model(name), "chunk", 3, masked)
    errors = check_model(case, T=7, B=3)
    assert max(errors.values()) < 1e-6, errors


# ---------------------------------------------------------------- probabilities


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-6), (np.float64, 1e-12)])
def test_probabilities_sum_to_one_and_nll_is_their_log(name, dtype, tol, merge_work):
    layer, params, config = make_layer(name, dtype=dtype, bound=2.0)
    hidden, targets, weights = make_rows(config, N=64, dtype=dtype)
    logp = layer.log_probs(params, hidden)
    assert logp.shape == (64, config.vocab_size) and logp.dtype == dtype
    np.testing.assert_allclose(np.exp(logp.astype(np.float64)).sum(axis=1), 1.0, rtol=0, atol=tol)
    nll = layer.nll(params, hidden, targets)
    assert nll.shape == (64,) and nll.dtype == dtype
    picked = -logp[np.arange(64), targets]
    eps = float(np.finfo(dtype).eps)
    np.testing.assert_allclose(nll, picked, rtol=20 * eps, atol=20 * eps)
    loss = LossRun(layer, params, hidden, targets, weights).loss
    assert loss == pytest.approx(float((weights.astype(np.float64) * picked).sum()), rel=50 * eps)


@pytest.mark.parametrize("name", ["class", "adaptive, head bias"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_logits_whose_exp_overflows_or_underflows(name, dtype):
    """Logits of several hundred: exp overflows (and the rest underflow); the rows are redone with
    the shift, in training and in evaluation, and agree with the shifted log-softmax."""
    layer, params, config = make_layer(name, dtype=dtype)
    for param in params:
        params[param] *= 300
    hidden, targets, weights = make_rows(config, N=40, dtype=dtype)
    logp = layer.log_probs(params, hidden)
    assert np.isfinite(logp).all()
    picked = -logp[np.arange(40), targets].astype(np.float64)
    with np.errstate(over="raise", invalid="raise"):
        nll = layer.nll(params, hidden, targets)
        run = LossRun(layer, params, hidden, targets, weights)
    np.testing.assert_allclose(nll, picked, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-3)
    assert run.loss == pytest.approx(float((weights * picked).sum()), rel=1e-5 if dtype == np.float32 else 1e-12)
    assert all(np.isfinite(g).all() for g in run.grads.values()) and np.isfinite(run.d_hidden).all()


@pytest.mark.parametrize("name", ["class", "adaptive"])
def test_nll_by_chunks_of_rows_equals_one_chunk(name, monkeypatch):
    layer, params, config = make_layer(name)
    hidden, targets, _ = make_rows(config, N=50)
    whole = layer.nll(params, hidden, targets)
    monkeypatch.setattr(two_level, "LOGITS_BYTES", 7 * 8 * 3)  # 7 rows of the widest cluster at a time
    np.testing.assert_allclose(layer.nll(params, hidden, targets), whole, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("name", ["rnn, class", "lstm, adaptive"])
def test_model_log_probs_and_steps_are_distributions(name):
    model = make_model(name, scale=False)
    ids = np.random.default_rng(0).integers(0, 11, (6, 3))
    logp, _ = model.log_probs(ids)
    np.testing.assert_allclose(np.exp(logp).sum(axis=-1), 1.0, atol=1e-12)
    nll, _ = model.nll(ids[:-1], ids[1:])
    np.testing.assert_allclose(nll, -np.take_along_axis(logp[:-1], ids[1:, :, None], -1)[..., 0], rtol=1e-12)
    step, _ = model.step(ids[0])
    np.testing.assert_allclose(step, logp[0], rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------- the class layer, literally


def literal_class_softmax(hidden, class_weight, class_bias, word_weight, word_bias, bounds, targets, weights):
    """Mikolov et al. (2011) written out row by row: p(w | h) = p(c | h) p(w | c, h), each a softmax
    (over the classes; over the words of class c), and the gradients of the weighted loss by hand.
    Returns (loss, log-probabilities (N, V), d hidden, {name: gradient})."""
    N, H = hidden.shape
    V, C = word_weight.shape[0], class_weight.shape[0]
    class_bias = np.zeros(C) if class_bias is None else class_bias
    word_bias = np.zeros(V) if word_bias is None else word_bias
    loss, logp = 0.0, np.zeros((N, V))
    d_hidden = np.zeros((N, H))
    grads = {"class_decoder.weight": np.zeros((C, H)), "class_decoder.bias": np.zeros(C),
             "decoder.weight": np.zeros((V, H)), "decoder.bias": np.zeros(V)}
    for i in range(N):
        h = hidden[i]
        class_logits = np.array([class_weight[c] @ h + class_bias[c] for c in range(C)])
        p_class = np.exp(class_logits - class_logits.max())
        p_class /= p_class.sum()
        target_class = next(c for c in range(C) if bounds[c] <= targets[i] < bounds[c + 1])
        for c in range(C):
            lo, hi = bounds[c], bounds[c + 1]
            word_logits = np.array([word_weight[w] @ h + word_bias[w] for w in range(lo, hi)])
            p_word = np.exp(word_logits - word_logits.max())
            p_word /= p_word.sum()
            logp[i, lo:hi] = np.log(p_class[c]) + np.log(p_word)
            if c == target_class:
                loss -= weights[i] * logp[i, targets[i]]
                d_logits = weights[i] * p_word
                d_logits[targets[i] - lo] -= weights[i]
                grads["decoder.weight"][lo:hi] += np.outer(d_logits, h)
                grads["decoder.bias"][lo:hi] += d_logits
                d_hidden[i] += d_logits @ word_weight[lo:hi]
        d_class = weights[i] * p_class
        d_class[target_class] -= weights[i]
        grads["class_decoder.weight"] += np.outer(d_class, h)
        grads["class_decoder.bias"] += d_class
        d_hidden[i] += d_class @ class_weight
    return loss, logp, d_hidden, grads


@pytest.mark.parametrize("name", ["class", "class, no bias"])
@pytest.mark.parametrize("masked", [False, True])
def test_class_layer_equals_the_literal_formula(name, masked, merge_work):
    layer, params, config = make_layer(name)
    hidden, targets, weights = make_rows(config, N=40, masked=masked)
    loss, logp, d_hidden, grads = literal_class_softmax(
        hidden, params["class_decoder.weight"], params.get("class_decoder.bias"), params["decoder.weight"],
        params.get("decoder.bias"), layer.layout.bounds, targets, weights)
    run = LossRun(layer, params, hidden, targets, weights)
    assert run.loss == pytest.approx(loss, rel=1e-13)
    np.testing.assert_allclose(layer.log_probs(params, hidden), logp, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(layer.nll(params, hidden, targets), -logp[np.arange(40), targets], rtol=1e-13)
    np.testing.assert_allclose(run.d_hidden, d_hidden, rtol=1e-12, atol=1e-14)
    assert set(run.grads) == set(params)
    for param, grad in run.grads.items():
        np.testing.assert_allclose(grad, grads[param], rtol=1e-12, atol=1e-14, err_msg=param)


@pytest.mark.parametrize("name,targets", [
    ("adaptive", [0, 1, 2, 3, 3, 0]),  # all in the shortlist
    ("class", [0, 5, 5, 0, 0, 5]),  # all in classes of one word
])
def test_batches_with_no_tail_to_compute(name, targets):
    layer, params, config = make_layer(name)
    hidden = np.random.default_rng(0).standard_normal((6, config.hidden_size))
    targets = np.array(targets)
    run = LossRun(layer, params, hidden, targets, np.full(6, 0.5))
    logp = layer.log_probs(params, hidden)
    assert run.loss == pytest.approx(-0.5 * logp[np.arange(6), targets].sum(), rel=1e-13)
    tail = [p for p in params if p.startswith("decoder.tail") or p in ("decoder.weight", "decoder.bias")]
    assert all(not run.grads[p].any() for p in tail)
    zero = LossRun(layer, params, hidden, targets, np.zeros(6))
    assert zero.loss == 0 and not zero.d_hidden.any()


def test_masked_rows_are_invisible():
    """A row of weight 0 changes nothing, whatever its target and state."""
    for name in ("class", "adaptive"):
        layer, params, config = make_layer(name)
        hidden, targets, weights = make_rows(config, masked=True)
        masked = weights == 0
        run = LossRun(layer, params, hidden, targets, weights)
        other_targets, other_hidden = targets.copy(), hidden.copy()
        other_targets[masked] = (targets[masked] + 5) % config.vocab_size
        other_hidden[masked] *= -2
        other = LossRun(layer, params, other_hidden, other_targets, weights)
        assert other.loss == pytest.approx(run.loss, rel=1e-14)
        assert not other.d_hidden[masked].any()
        for param in params:
            np.testing.assert_allclose(other.grads[param], run.grads[param], rtol=1e-13, atol=1e-16)


# ---------------------------------------------------------------- fused SGD step


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("rows", [30, 90])  # the head's softmax takes its few-rows path up to 64
def test_fused_step_equals_gradients_then_update(name, dtype, threads, rows, set_threads, merge_work):
    set_threads(threads)
    layer, params, config = make_layer(name, dtype=dtype)
    hidden, targets, weights = make_rows(config, N=rows, masked=True, dtype=dtype)
    targets[(targets >= 6) & (targets < 9)] = 0  # the class layer's class [6, 9) has no target
    before = {param: value.copy() for param, value in params.items()}
    plain = LossRun(layer, params, hidden, targets, weights)
    fused = LossRun(layer, params, hidden, targets, weights, sgd_lr=0.3)
    eps = float(np.finfo(dtype).eps)
    assert fused.loss == pytest.approx(plain.loss, rel=10 * eps)
    np.testing.assert_allclose(fused.d_hidden, plain.d_hidden, rtol=100 * eps, atol=10 * eps)
    assert all(grad is None for grad in fused.grads.values())
    for param, value in params.items():
        want = before[param] - dtype(0.3) * plain.grads[param]
        # float64: rounding; float32: the step's products in another order, a few ulps of the weights
        atol = 1e-15 if dtype == np.float64 else 8 * eps * np.abs(want).max()
        np.testing.assert_allclose(value, want, rtol=1e-12 if dtype == np.float64 else 0, atol=atol, err_msg=param)
    if name == "class":  # the words of a class without a target do not move at all, merged or not
        for param in ("decoder.weight", "decoder.bias"):
            assert np.array_equal(params[param][6:9], before[param][6:9])
            assert not np.array_equal(params[param][9:], before[param][9:])


def test_a_class_without_targets_inside_a_merged_block_does_not_move():
    """Its words are in the block's product, masked out: the step moves them by exactly 0."""
    layer = ClassSoftmax(20, 4, (2, 4, 6))
    params = layer.init_params(np.random.default_rng(0), np.dtype(np.float64), 0.5)
    gen = np.random.default_rng(1)
    hidden = gen.standard_normal((12, 4))
    targets = np.array([0, 1, 0, 1, 4, 5, 4, 5, 9, 12, 15, 19])  # none in [2, 4)
    blocks = two_level.plan_blocks(layer.layout, two_level.route(layer.layout, targets).starts, 4)
    assert blocks[0].merged and (blocks[0].lo, blocks[0].hi) == (0, 6)
    before = {param: value.copy() for param, value in params.items()}
    LossRun(layer, params, hidden, targets, np.full(12, 0.5), sgd_lr=1.0)
    for param in ("decoder.weight", "decoder.bias"):
        assert np.array_equal(params[param][2:4], before[param][2:4])
        assert not np.array_equal(params[param][:2], before[param][:2])


def test_the_stepping_gate_must_be_the_loss():
    layer, params, config = make_layer("adaptive")
    hidden, targets, weights = make_rows(config)
    gate = two_level.TwoLevelSoftmaxCE(layer.layout, sgd_lr=0.1)
    tail = [params[name] for name in layer.tail_names()]
    _, saved = gate.forward(hidden, params["decoder.head.weight"], None, targets, weights, *tail)
    with pytest.raises(ValueError, match="seeded with 1"):
        gate.backward(saved, 2.0)


def sgd_by_hand(model, lr, inputs, targets, **kw):
    result = model.loss_and_grads(inputs, targets, **kw)
    for name, grad in result.grads.items():
        model.params[name] -= lr * grad
    return result.loss, result.hidden


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("threads", [1, 2])
def test_model_sgd_step_equals_loss_and_grads_then_update(name, threads, set_threads):
    """Three fused steps in a row (masked, carried state, repeated input ids) equal the unfused ones."""
    set_threads(threads)
    fused, plain = make_model(name, V=40, scale=False), make_model(name, V=40, scale=False)
    config = fused.config
    gen = np.random.default_rng(5)
    hidden = None
    for step in range(3):
        inputs, targets = gen.integers(0, 40, (7, 3)), gen.integers(0, 40, (7, 3))
        inputs[1:3, 0] = inputs[0, 0]
        mask = (gen.random((7, 3)) < 0.7).astype(float)
        kw = dict(mask=mask, bptt="chunk", truncate=3, hidden=hidden)
        loss, hidden = fused.sgd_step(inputs, targets, 0.5, **kw)
        want, want_hidden = sgd_by_hand(plain, 0.5, inputs, targets, **kw)
        assert loss == pytest.approx(want, rel=1e-13)
        np.testing.assert_allclose(np.asarray(hidden), np.asarray(want_hidden), rtol=1e-12, atol=1e-14)
    if config.softmax == "class":
        assert config.tied == ("decoder.weight" not in fused.params)
    for param in plain.params:
        np.testing.assert_allclose(fused.params[param], plain.params[param], rtol=1e-11, atol=1e-14, err_msg=param)


@pytest.mark.parametrize("name", ["lstm, class", "lstm, adaptive"])
def test_float32_model_agrees_with_its_float64_copy(name):
    model32 = make_model(name, dtype="float32", scale=False)
    model64 = LanguageModel.from_config({**model32.config.to_dict(), "dtype": "float64"},
                                        {k: v.astype(np.float64) for k, v in model32.params.items()})
    gen = np.random.default_rng(2)
    inputs, targets = gen.integers(0, 11, (6, 4)), gen.integers(0, 11, (6, 4))
    a, b = model32.loss_and_grads(inputs, targets), model64.loss_and_grads(inputs, targets)
    assert a.loss == pytest.approx(b.loss, rel=1e-5)
    for param in a.grads:
        assert a.grads[param].dtype == np.float32
        scale = np.abs(b.grads[param]).max()
        np.testing.assert_allclose(a.grads[param], b.grads[param], rtol=0, atol=1e-4 * scale + 1e-7, err_msg=param)
    loss, _ = model32.sgd_step(inputs, targets, 0.1)
    assert loss == pytest.approx(a.loss, rel=1e-6)
    assert all(value.dtype == np.float32 for value in model32.params.values())


def test_empty_sequences():
    for name in ("rnn, class", "lstm, adaptive"):
        model = make_model(name, scale=False)
        before = {k: v.copy() for k, v in model.params.items()}
        empty = np.zeros((0, 2), dtype=int)
        assert model.loss_and_grads(empty, empty).loss == 0
        model.sgd_step(empty, empty, 0.5)
        assert all(np.array_equal(before[k], model.params[k]) for k in before)
        assert model.nll(empty, empty)[0].shape == (0, 2)


# ---------------------------------------------------------------- parameters


def test_class_layer_parameters():
    config = ModelConfig(20, 6, embed_size=6, softmax="class", cutoffs=(3, 9, 14))
    assert {k: v for k, v in config.param_shapes().items() if "rnn" not in k} == {
        "encoder.weight": (20, 6), "decoder.weight": (20, 6), "decoder.bias": (20,),
        "class_decoder.weight": (4, 6), "class_decoder.bias": (4,)}
    tied = ModelConfig(20, 6, embed_size=6, softmax="class", cutoffs=(3, 9, 14), tied=True, bias=False)
    assert [k for k in tied.param_shapes() if "rnn" not in k] == ["encoder.weight", "class_decoder.weight"]
    model = LanguageModel(20, 6, embed_size=6, softmax="class", cutoffs=(3, 9, 14), seed=3)
    assert not model.params["decoder.bias"].any() and not model.params["class_decoder.bias"].any()
    assert np.abs(model.params["class_decoder.weight"]).max() <= 0.1
    again = LanguageModel(20, 6, embed_size=6, softmax="class", cutoffs=(3, 9, 14), seed=3)
    assert all(np.array_equal(model.params[k], again.params[k]) for k in model.params)


def test_adaptive_layer_parameters_are_torch_names_and_shapes():
    config = ModelConfig(100, 64, embed_size=8, softmax="adaptive", cutoffs=(10, 30, 60), head_bias=True)
    shapes = {k: v for k, v in config.param_shapes().items() if k.startswith("decoder.")}
    assert shapes == {"decoder.head.weight": (13, 64), "decoder.head.bias": (13,),
                      "decoder.tail.0.0.weight": (16, 64), "decoder.tail.0.1.weight": (20, 16),
                      "decoder.tail.1.0.weight": (4, 64), "decoder.tail.1.1.weight": (30, 4),
                      "decoder.tail.2.0.weight": (1, 64), "decoder.tail.2.1.weight": (40, 1)}
    assert projection_widths(64, 3, 4.0) == (16, 4, 1) and projection_widths(10, 2, 1.5) == (6, 4)
    model = LanguageModel(100, 64, embed_size=8, softmax="adaptive", cutoffs=(10, 30, 60))
    state = module_state(model.params)
    assert set(state) == {"head.weight", "tail.0.0.weight", "tail.0.1.weight", "tail.1.0.weight",
                          "tail.1.1.weight", "tail.2.0.weight", "tail.2.1.weight"}
    assert from_module_state(state) == {k: v for k, v in model.params.items() if k.startswith("decoder.")}
    model.load_params({**model.params, **from_module_state({k: v * 2 for k, v in state.items()})})
    assert np.array_equal(model.params["decoder.tail.1.1.weight"], 2 * state["tail.1.1.weight"])


# ---------------------------------------------------------------- class cut points


def class_sizes(cutoffs, V):
    return np.diff([0, *cutoffs, V])


def test_class_cutoffs_of_equal_counts_are_equal_classes():
    assert class_cutoffs([5] * 12, 3) == (4, 8)
    assert class_cutoffs([5] * 12, 4) == (3, 6, 9)
    assert class_cutoffs([1] * 7, 7) == (1, 2, 3, 4, 5, 6)
    assert class_cutoffs([1] * 7, 1) == ()


def test_class_cutoffs_put_frequent_words_in_small_classes():
    # masses .6 .2 .1 .05 .03 .02: the first word alone passes 1/3, the second takes a class of its own
    assert class_cutoffs([60, 20, 10, 5, 3, 2], 3, mass="frequency") == (1, 2)
    counts = [16, 16, 4, 4, 4, 4, 1, 1, 1, 1, 1, 1, 1, 1]
    assert class_cutoffs(counts, 3, mass="frequency") == (1, 3)  # thirds of 56: middles below 18.7, 37.3
    assert class_cutoffs(counts, 3, mass="sqrt") == (2, 6)  # sqrt masses 4 4 | 2 2 2 2 | 1 x 8
    assert class_cutoffs(counts, 3) == (2, 6)  # sqrt, the RNNLM toolkit's default
    zipf = np.round(1e6 / np.arange(1, 2001)).astype(int)
    for mass in ("frequency", "sqrt"):
        cuts = class_cutoffs(zipf, 45, mass=mass)
        sizes = class_sizes(cuts, 2000)
        assert len(sizes) == 45 and sizes.min() >= 1
        assert (np.diff(sizes) >= 0).all()  # the classes grow along the ids
    frequency = class_sizes(class_cutoffs(zipf, 45, mass="frequency"), 2000)
    sqrt = class_sizes(class_cutoffs(zipf, 45, mass="sqrt"), 2000)
    assert frequency[0] == 1 and frequency.max() > sqrt.max()


def test_class_cutoffs_land_on_the_nearest_boundary():
    """Where no class is forced (a word heavier than 1/C), each cut's mass is within half a word of k/C."""
    counts = np.random.default_rng(0).integers(1, 50, 300)
    C = 17
    for mass, weights in (("frequency", counts), ("sqrt", np.sqrt(counts))):
        cuts = class_cutoffs(counts, C, mass=mass)
        ends = np.cumsum(weights) / weights.sum()
        for k, cut in enumerate(cuts, start=1):
            before = ends[cut - 1]  # the mass of ids below the cut
            assert abs(before - k / C) <= weights[[cut - 1, cut]].max() / weights.sum() / 2 + 1e-12


def test_class_cutoffs_every_class_has_a_word():
    gen = np.random.default_rng(1)
    for _ in range(50):
        V = int(gen.integers(1, 40))
        counts = gen.integers(0, 100, V) * (gen.random(V) < 0.7)
        counts[0] += 1
        C = int(gen.integers(1, V + 1))
        cuts = class_cutoffs(counts, C, mass=("frequency", "sqrt")[_ % 2])
        assert len(cuts) == C - 1 and class_sizes(cuts, V).min() >= 1
    for mass in ("frequency", "sqrt"):
        assert class_cutoffs([0, 0, 9, 0, 0, 0], 4, mass=mass) == (2, 3, 4)  # ids of no mass still fill classes
        assert class_cutoffs([100, 1, 1, 1], 4, mass=mass) == (1, 2, 3)


def test_class_cutoffs_refuse_what_cannot_be_cut():
    with pytest.raises(ValueError, match="^4 classes for 3 words: every class needs at least one word$"):
        class_cutoffs([3, 2, 1], 4)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="number of classes must be a positive integer"):
            class_cutoffs([3, 2, 1], bad)
    with pytest.raises(ValueError, match="all 0"):
        class_cutoffs([0, 0, 0], 2)
    with pytest.raises(ValueError, match="counts must be"):
        class_cutoffs([3, -1, 1], 2)
    with pytest.raises(ValueError, match="mass must be one of frequency, sqrt"):
        class_cutoffs([3, 2, 1], 2, mass="log")


def test_default_classes_is_about_three_sqrt_v():
    assert default_classes(33278) == 547
    assert default_classes(10000) == 300
    assert default_classes(3) == 3 and default_classes(1) == 1


# ---------------------------------------------------------------- configurations


@pytest.mark.parametrize("settings,message", [
    (dict(softmax="class"), "the class output layer needs cutoffs 0 < c1 < ... < 20"),
    (dict(softmax="adaptive"), "the adaptive output layer needs cutoffs"),
    (dict(softmax="class", cutoffs=(5, 3)), "cutoffs must increase, but 3 follows 5"),
    (dict(softmax="adaptive", cutoffs=(3, 3)), "cutoffs must be distinct, but 3 is listed twice"),
    (dict(softmax="class", cutoffs=(0, 3)), r"cutoffs must lie in 1\.\.19 for a vocabulary of 20, not 0"),
    (dict(softmax="adaptive", cutoffs=(3, 20)), r"cutoffs must lie in 1\.\.19 for a vocabulary of 20, not 20"),
    (dict(softmax="class", cutoffs=(3, -2)), "not -2"),
    (dict(softmax="class", cutoffs=(2.5, 4)), "cutoffs must be integers, not 2.5"),
    (dict(softmax="adaptive", cutoffs=(3.0,)), "cutoffs must be integers, not 3.0"),
    (dict(softmax="adaptive", cutoffs=(3, 6), div_value=0), "div_value must be a positive number, not 0"),
    (dict(softmax="adaptive", cutoffs=(3, 6), div_value=float("nan")), "div_value must be a positive number"),
    (dict(softmax="adaptive", cutoffs=(3, 6, 9, 12), div_value=2.0),
     r"cluster 3's projection width 8 // 2.0\^4 is 0: use a smaller div_value or fewer cutoffs"),
    (dict(softmax="adaptive", cutoffs=(3,), tied=True, embed_size=8), "cannot tie its weights to the encoder"),
    (dict(softmax="class", cutoffs=(3,), head_bias=True), "head_bias belongs to the adaptive output layer"),
    (dict(softmax="full", cutoffs=(3,)), "the full softmax takes no cutoffs"),
])
def test_bad_configurations_are_refused_in_one_line(settings, message):
    with pytest.raises(ValueError, match=message) as error:
        ModelConfig(20, 8, **settings)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match=message):
        LanguageModel(20, 8, **settings)


def test_cutoffs_from_json_and_numpy_are_accepted():
    config = ModelConfig.from_dict({"vocab_size": 20, "hidden_size": 8, "softmax": "class",
                                    "cutoffs": [np.int64(3), 9]})
    assert config.output_layer().cutoffs == (3, 9)
    assert isinstance(ClassSoftmax(20, 8, (np.int32(4),)).cutoffs[0], int)
    assert AdaptiveSoftmax(20, 8, [4, 9], div_value=np.float32(2.0)).widths == (4, 2)
