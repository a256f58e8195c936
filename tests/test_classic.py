"""rnnlab.classic.Model gives the tutorial's numbers.

The slow peer is ``rnnlab.reference.ReferenceModel``: the tutorial's model
written out literally (one-hot input vectors, one gate call at a time, the
tutorial's nested BPTT loops), sharing no code with the engine.
"""
import re

import numpy as np
import pytest

from rnnlab.classic import Model
from rnnlab.reference import ReferenceModel

REL = 1e-10


def rel_diff(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


# ---------------------------------------------------------------- helpers


def sentences(word_dim, lengths, seed=0):
    """(X, Y) lists of word indices: y is x shifted by one, as in the tutorial's data."""
    gen = np.random.default_rng(seed)
    X, Y = [], []
    for n in lengths:
        words = gen.integers(0, word_dim, n + 1)
        X.append([int(w) for w in words[:-1]])
        Y.append([int(w) for w in words[1:]])
    return X, Y


def classic_model(word_dim, hidden_dim, bptt_truncate=4, seed=10):
    np.random.seed(seed)
    return Model(word_dim, hidden_dim, bptt_truncate)


def reference_of(model):
    return ReferenceModel(model.U, model.W, model.V, model.bptt_truncate)


def strip_time(text):
    return re.sub(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d: ", "", text, flags=re.M)


# ---------------------------------------------------------------- initialisation


@pytest.mark.parametrize("word_dim,hidden_dim", [(50, 10), (300, 16), (7, 30)])
def test_init_draws_like_the_tutorial(word_dim, hidden_dim):
    model = classic_model(word_dim, hidden_dim)
    after_model = np.random.get_state()[1].copy()
    np.random.seed(10)
    U = np.random.uniform(-np.sqrt(1. / word_dim), np.sqrt(1. / word_dim), (hidden_dim, word_dim))
    W = np.random.uniform(-np.sqrt(1. / hidden_dim), np.sqrt(1. / hidden_dim), (hidden_dim, hidden_dim))
    V = np.random.uniform(-np.sqrt(1. / hidden_dim), np.sqrt(1. / hidden_dim), (word_dim, hidden_dim))
    np.testing.assert_array_equal(model.U, U)
    np.testing.assert_array_equal(model.W, W)
    np.testing.assert_array_equal(model.V, V)
    # no extra draws: the global generator is where the tutorial leaves it
    np.testing.assert_array_equal(np.random.get_state()[1], after_model)
    assert model.U.shape == (hidden_dim, word_dim) and model.U.dtype == np.float64
    assert (model.word_dim, model.hidden_dim, model.bptt_truncate) == (word_dim, hidden_dim, 4)


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("bptt_truncate", [1, 2, 4, 10])
@pytest.mark.parametrize("word_dim,hidden_dim", [(50, 12), (300, 20)])
def test_bptt_equals_reference(word_dim, hidden_dim, bptt_truncate):
    model = classic_model(word_dim, hidden_dim, bptt_truncate)
    ref = reference_of(model)
    X, Y = sentences(word_dim, [1, 2, bptt_truncate, bptt_truncate + 1, 9, 15], seed=bptt_truncate)
    X.append([0, 0, 0, 1, 0, 0])  # repeated words: rows of dU summed
    Y.append([0, 1, 0, 0, 0, 2])
    for x, y in zip(X, Y):
        got = model.bptt(x, y)
        expected = ref.bptt(x, y)
        for name, g, e in zip("UWV", got, expected):
            assert g.shape == e.shape, name
            assert rel_diff(g, e) < REL, (name, len(x), bptt_truncate, rel_diff(g, e))


def test_bptt_word_dim_8000():
    """The tutorial's size: word_dim 8000, hidden 100, a 20-word sentence."""
    model = classic_model(8000, 100)
    ref = reference_of(model)
    X, Y = sentences(8000, [20], seed=8000)
    got = model.bptt(X[0], Y[0])
    expected = ref.bptt(X[0], Y[0])
    for name, g, e in zip("UWV", got, expected):
        assert rel_diff(g, e) < REL, name


# ---------------------------------------------------------------- forward, losses, predict


def test_forward_propagation_and_predict_equal_reference():
    model = classic_model(80, 14)
    ref = reference_of(model)
    X, _ = sentences(80, [1, 6, 13], seed=2)
    for x in X:
        steps = model.forward_propagation(x)
        layers = ref.forward_propagation(x)
        assert len(steps) == len(layers) == len(x)
        for step, layer in zip(steps, layers):
            assert step.s.shape == (14,) and step.mulv.shape == (80,)
            assert rel_diff(step.s, layer.s) < REL
            assert rel_diff(step.mulv, layer.mulv) < REL
        expected = [int(np.argmax(layer.mulv)) for layer in layers]  # softmax keeps the argmax
        assert [int(p) for p in model.predict(x)] == expected


def test_calculate_loss_equals_reference():
    model = classic_model(100, 16)
    ref = reference_of(model)
    X, Y = sentences(100, [1, 5, 12], seed=3)
    for x, y in zip(X, Y):
        assert model.calculate_loss(x, y) == pytest.approx(ref.calculate_loss(x, y), rel=REL)
    with pytest.raises(AssertionError):
        model.calculate_loss([1, 2], [3])


def test_calculate_total_loss_over_padded_batches():
    """Sentences of many lengths, more than one padded batch of 64: same as sentence by sentence."""
    model = classic_model(60, 12)
    ref = reference_of(model)
    lengths = [int(n) for n in np.random.default_rng(4).integers(1, 15, 140)]
    X, Y = sentences(60, lengths, seed=4)
    got = model.calculate_total_loss(X, Y)
    assert got == pytest.approx(ref.calculate_total_loss(X, Y), rel=REL)
    # and in the same order as the slow per-sentence loop
    one_by_one = np.mean([model.calculate_loss(x, y) for x, y in zip(X, Y)])
    assert got == pytest.approx(one_by_one, rel=1e-12)


# ---------------------------------------------------------------- training


def test_sgd_step_equals_reference():
    model = classic_model(70, 12, bptt_truncate=3)
    ref = reference_of(model)
    X, Y = sentences(70, [5, 1, 9], seed=6)
    for x, y in zip(X, Y):
        model.sgd_step(x, y, 0.05)
        ref.sgd_step(x, y, 0.05)
    for name in "UWV":
        assert rel_diff(getattr(model, name), getattr(ref, name)) < REL, name
    assert model.calculate_loss(X[0], Y[0]) == pytest.approx(ref.calculate_loss(X[0], Y[0]), rel=REL)


def test_train_equals_reference_and_prints_the_tutorials_lines(capsys):
    model = classic_model(50, 10)
    ref = reference_of(model)
    X, Y = sentences(50, [4, 7, 2, 9, 5], seed=7)
    losses = model.train(X, Y, learning_rate=0.05, nepoch=3, evaluate_loss_after=1)
    expected = ref.train(X, Y, learning_rate=0.05, nepoch=3, evaluate_loss_after=1)
    assert [n for n, _ in losses] == [n for n, _ in expected] == [0, 5, 10]
    for (_, got), (_, want) in zip(losses, expected):
        assert got == pytest.approx(want, rel=REL)
    assert losses[-1][1] < losses[0][1]  # it learns
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert len(lines) == 3
    for line, (n, loss), epoch in zip(lines, losses, range(3)):
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d: ", line)
        assert strip_time(line) == "Loss after num_examples_seen=%d epoch=%d: %f" % (n, epoch, loss)
    assert "Setting learning rate" not in out


def test_train_halves_the_rate_when_the_loss_rises(capsys):
    model = classic_model(30, 8)
    ref = reference_of(model)
    X, Y = sentences(30, [6, 3, 8, 5], seed=11)
    kw = dict(learning_rate=25.0, nepoch=6, evaluate_loss_after=1)
    losses = model.train(X, Y, **kw)
    out = capsys.readouterr().out
    assert any(b[1] > a[1] for a, b in zip(losses, losses[1:])), "the case must make the loss rise"
    assert "Setting learning rate to 12.500000" in out
    expected = ref.train(X, Y, **kw)
    assert [n for n, _ in losses] == [n for n, _ in expected]
    for (_, got), (_, want) in zip(losses, expected):
        assert got == pytest.approx(want, rel=REL)
    # the halving is announced right after the evaluation whose loss rose
    lines = strip_time(out).splitlines()
    rose = next(k for k in range(1, len(losses)) if losses[k][1] > losses[k - 1][1])
    loss_lines = [k for k, line in enumerate(lines) if line.startswith("Loss after")]
    assert lines[loss_lines[rose] + 1] == "Setting learning rate to 12.500000"


def test_train_evaluates_every_n_epochs(capsys):
    model = classic_model(20, 6)
    X, Y = sentences(20, [3, 4], seed=12)
    losses = model.train(X, Y, learning_rate=0.01, nepoch=5, evaluate_loss_after=2)
    assert [n for n, _ in losses] == [0, 4, 8]
    assert "epoch=4:" in capsys.readouterr().out


# ---------------------------------------------------------------- the attributes are the weights


def test_assigning_and_updating_weights_in_place():
    model = classic_model(40, 8)
    X, Y = sentences(40, [6], seed=13)
    x, y = X[0], Y[0]
    gen = np.random.default_rng(14)

    new_U = gen.uniform(-0.3, 0.3, (8, 40))
    model.U = new_U
    np.testing.assert_array_equal(model.U, new_U)
    new_U[0, 0] += 1.0  # the model keeps its own copy
    assert model.U[0, 0] != new_U[0, 0]
    new_U[0, 0] -= 1.0

    delta = gen.uniform(-0.05, 0.05, (8, 8))
    W_before = model.W.copy()
    model.W -= delta
    np.testing.assert_allclose(model.W, W_before - delta, rtol=1e-15)
    model.V = model.V * 1.5
    model.U += 0.01

    ref = ReferenceModel(new_U + 0.01, W_before - delta, model.V, 4)
    assert model.calculate_loss(x, y) == pytest.approx(ref.calculate_loss(x, y), rel=REL)
    for g, e in zip(model.bptt(x, y), ref.bptt(x, y)):
        assert rel_diff(g, e) < REL
    for a, b in zip(model.forward_propagation(x), ref.forward_propagation(x)):
        assert rel_diff(a.mulv, b.mulv) < REL

    # In-place element writes reach the model too.
    model.W[0, 0] = 0.25
    model.U[1, 2] = -0.125
    ref.W[0, 0] = 0.25
    ref.U[1, 2] = -0.125
    assert model.calculate_loss(x, y) == pytest.approx(ref.calculate_loss(x, y), rel=REL)
    with pytest.raises(ValueError):
        model.W = np.zeros((3, 3))
    with pytest.raises(ValueError):
        model.U = np.zeros((40, 8))  # transposed


def test_bptt_truncate_attribute_is_used():
    model = classic_model(30, 6, bptt_truncate=4)
    X, Y = sentences(30, [9], seed=15)
    g4 = model.bptt(X[0], Y[0])
    model.bptt_truncate = 1
    g1 = model.bptt(X[0], Y[0])
    assert rel_diff(g1[1], g4[1]) > 1e-6
    for g, e in zip(g1, ReferenceModel(model.U, model.W, model.V, 1).bptt(X[0], Y[0])):
        assert rel_diff(g, e) < REL


def test_bptt_truncate_zero_like_the_tutorial():
    model = classic_model(20, 5, bptt_truncate=0)
    ref = reference_of(model)
    x, y = [1, 2, 3, 4], [2, 3, 4, 5]
    for name, g, e in zip("UWV", model.bptt(x, y), ref.bptt(x, y)):
        assert rel_diff(g, e) < REL, name
