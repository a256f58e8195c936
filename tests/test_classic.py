"""rnnlab.classic.Model gives the tutorial's numbers.

Two slow peers: ``rnnlab.reference.ReferenceModel`` and, below, the
tutorial's code transcribed literally (``Tutorial*`` classes: one-hot input
vectors, one gate call at a time, the tutorial's loops, its weight
initialisation, its printing). The reference is itself checked against the
transcription, so agreeing with it means agreeing with the tutorial.
"""
import re
import sys
from datetime import datetime

import numpy as np
import pytest

from rnnlab.classic import Model
from rnnlab.reference import ReferenceModel

REL = 1e-10
# The tutorial's MultiplyGate uses np.asmatrix, as written.
pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")


def rel_diff(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


# ---------------------------------------------------------------- the tutorial, literally

class MultiplyGate:
    def forward(self, W, x):
        return np.dot(W, x)

    def backward(self, W, x, dz):
        dW = np.asarray(np.dot(np.transpose(np.asmatrix(dz)), np.asmatrix(x)))
        dx = np.dot(np.transpose(W), dz)
        return dW, dx


class AddGate:
    def forward(self, x1, x2):
        return x1 + x2

    def backward(self, x1, x2, dz):
        dx1 = dz * np.ones_like(x1)
        dx2 = dz * np.ones_like(x2)
        return dx1, dx2


class TutorialTanh:
    def forward(self, x):
        return np.tanh(x)

    def backward(self, x, top_diff):
        output = self.forward(x)
        return (1.0 - np.square(output)) * top_diff


class Softmax:
    def predict(self, x):
        exp_scores = np.exp(x)
        return exp_scores / np.sum(exp_scores)

    def loss(self, x, y):
        probs = self.predict(x)
        return -np.log(probs[y])

    def diff(self, x, y):
        probs = self.predict(x)
        probs[y] -= 1.0
        return probs


mulGate = MultiplyGate()
addGate = AddGate()
activation = TutorialTanh()


class RNNLayer:
    def forward(self, x, prev_s, U, W, V):
        self.mulu = mulGate.forward(U, x)
        self.mulw = mulGate.forward(W, prev_s)
        self.add = addGate.forward(self.mulw, self.mulu)
        self.s = activation.forward(self.add)
        self.mulv = mulGate.forward(V, self.s)

    def backward(self, x, prev_s, U, W, V, diff_s, dmulv):
        self.forward(x, prev_s, U, W, V)
        dV, dsv = mulGate.backward(V, self.s, dmulv)
        ds = dsv + diff_s
        dadd = activation.backward(self.add, ds)
        dmulw, dmulu = addGate.backward(self.mulw, self.mulu, dadd)
        dW, dprev_s = mulGate.backward(W, prev_s, dmulw)
        dU, dx = mulGate.backward(U, x, dmulu)
        return (dprev_s, dU, dW, dV)


class TutorialModel:
    def __init__(self, word_dim, hidden_dim=100, bptt_truncate=4):
        self.word_dim = word_dim
        self.hidden_dim = hidden_dim
        self.bptt_truncate = bptt_truncate
        self.U = np.random.uniform(-np.sqrt(1. / word_dim), np.sqrt(1. / word_dim), (hidden_dim, word_dim))
        self.W = np.random.uniform(-np.sqrt(1. / hidden_dim), np.sqrt(1. / hidden_dim), (hidden_dim, hidden_dim))
        self.V = np.random.uniform(-np.sqrt(1. / hidden_dim), np.sqrt(1. / hidden_dim), (word_dim, hidden_dim))

    def forward_propagation(self, x):
        T = len(x)
        layers = []
        prev_s = np.zeros(self.hidden_dim)
        for t in range(T):
            layer = RNNLayer()
            input = np.zeros(self.word_dim)
            input[x[t]] = 1
            layer.forward(input, prev_s, self.U, self.W, self.V)
            prev_s = layer.s
            layers.append(layer)
        return layers

    def predict(self, x):
        output = Softmax()
        layers = self.forward_propagation(x)
        return [np.argmax(output.predict(layer.mulv)) for layer in layers]

    def calculate_loss(self, x, y):
        assert len(x) == len(y)
        output = Softmax()
        layers = self.forward_propagation(x)
        loss = 0.0
        for i, layer in enumerate(layers):
            loss += output.loss(layer.mulv, y[i])
        return loss / float(len(y))

    def calculate_total_loss(self, X, Y):
        loss = 0.0
        for i in range(len(Y)):
            loss += self.calculate_loss(X[i], Y[i])
        return loss / float(len(Y))

    def bptt(self, x, y):
        assert len(x) == len(y)
        output = Softmax()
        layers = self.forward_propagation(x)
        dU = np.zeros(self.U.shape)
        dV = np.zeros(self.V.shape)
        dW = np.zeros(self.W.shape)
        T = len(layers)
        prev_s_t = np.zeros(self.hidden_dim)
        diff_s = np.zeros(self.hidden_dim)
        for t in range(0, T):
            dmulv = output.diff(layers[t].mulv, y[t])
            input = np.zeros(self.word_dim)
            input[x[t]] = 1
            dprev_s, dU_t, dW_t, dV_t = layers[t].backward(input, prev_s_t, self.U, self.W, self.V, diff_s, dmulv)
            prev_s_t = layers[t].s
            dmulv = np.zeros(self.word_dim)
            for i in range(t-1, max(-1, t-self.bptt_truncate-1), -1):
                input = np.zeros(self.word_dim)
                input[x[i]] = 1
                prev_s_i = np.zeros(self.hidden_dim) if i == 0 else layers[i-1].s
                dprev_s, dU_i, dW_i, dV_i = layers[i].backward(input, prev_s_i, self.U, self.W, self.V, dprev_s, dmulv)
                dU_t += dU_i
                dW_t += dW_i
            dV += dV_t
            dU += dU_t
            dW += dW_t
        return (dU, dW, dV)

    def sgd_step(self, x, y, learning_rate):
        dU, dW, dV = self.bptt(x, y)
        self.U -= learning_rate * dU
        self.V -= learning_rate * dV
        self.W -= learning_rate * dW

    def train(self, X, Y, learning_rate=0.005, nepoch=100, evaluate_loss_after=5):
        num_examples_seen = 0
        losses = []
        for epoch in range(nepoch):
            if (epoch % evaluate_loss_after == 0):
                loss = self.calculate_total_loss(X, Y)
                losses.append((num_examples_seen, loss))
                time = datetime.now().strftime('%Y-%m-%d %H:%M:%S')
                print("%s: Loss after num_examples_seen=%d epoch=%d: %f" % (time, num_examples_seen, epoch, loss))
                # Adjust the learning rate if loss increases
                if len(losses) > 1 and losses[-1][1] > losses[-2][1]:
                    learning_rate = learning_rate * 0.5
                    print("Setting learning rate to %f" % learning_rate)
                sys.stdout.flush()
            # For each training example...
            for i in range(len(Y)):
                self.sgd_step(X[i], Y[i], learning_rate)
                num_examples_seen += 1
        return losses


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
    np.random.seed(10)
    tut = TutorialModel(word_dim, hidden_dim)
    for name in "UWV":
        np.testing.assert_array_equal(getattr(model, name), getattr(tut, name))


# ---------------------------------------------------------------- the reference is the tutorial


def test_reference_equals_transcribed_tutorial():
    np.random.seed(3)
    tut = TutorialModel(40, 8, bptt_truncate=3)
    ref = ReferenceModel(tut.U, tut.W, tut.V, 3)
    X, Y = sentences(40, [1, 3, 7], seed=1)
    for x, y in zip(X, Y):
        for a, b in zip(ref.bptt(x, y), tut.bptt(x, y)):
            assert rel_diff(a, b) < 1e-13
        assert ref.calculate_loss(x, y) == pytest.approx(tut.calculate_loss(x, y), rel=1e-13)
    got = ref.train(X, Y, learning_rate=0.1, nepoch=3, evaluate_loss_after=1)
    want = tut.train(X, Y, learning_rate=0.1, nepoch=3, evaluate_loss_after=1)
    assert [n for n, _ in got] == [n for n, _ in want] == [0, 3, 6]
    assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-12)


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


def test_bptt_equals_transcribed_tutorial():
    np.random.seed(10)
    tut = TutorialModel(60, 10, bptt_truncate=3)
    model = classic_model(60, 10, 3)
    X, Y = sentences(60, [1, 4, 11], seed=5)
    for x, y in zip(X, Y):
        for g, e in zip(model.bptt(x, y), tut.bptt(x, y)):
            assert rel_diff(g, e) < REL


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
    softmax = Softmax()
    for x in X:
        steps = model.forward_propagation(x)
        layers = ref.forward_propagation(x)
        assert len(steps) == len(layers) == len(x)
        for step, layer in zip(steps, layers):
            assert step.s.shape == (14,) and step.mulv.shape == (80,)
            assert rel_diff(step.s, layer.s) < REL
            assert rel_diff(step.mulv, layer.mulv) < REL
        expected = [int(np.argmax(softmax.predict(layer.mulv))) for layer in layers]
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
    # the printed text is the tutorial's own, apart from the clock
    np.random.seed(10)
    tut = TutorialModel(50, 10)
    tut.train(X, Y, learning_rate=0.05, nepoch=3, evaluate_loss_after=1)
    assert strip_time(capsys.readouterr().out) == strip_time(out)


def test_train_halves_the_rate_when_the_loss_rises(capsys):
    model = classic_model(30, 8)
    ref = reference_of(model)
    np.random.seed(10)
    tut = TutorialModel(30, 8)
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
    tut.train(X, Y, **kw)
    assert strip_time(capsys.readouterr().out) == strip_time(out)


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
