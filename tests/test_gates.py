"""Primitive gates: backward against finite differences, and the numerics of the forwards."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rnnlab import gates
from rnnlab.gradcheck import check_gate, gate_cases, relative_error

GATE_TOL = 1e-7
CASES = gate_cases()


def test_gate_cases_cover_every_primitive():
    labels = {label for label, *_ in CASES}
    for cls in gates.PRIMITIVES:
        assert cls.__name__ in labels, f"{cls.__name__} has no finite-difference case"
    for composite in ("RNNStep", "LinearSoftmaxCE", "RNNSequence[full]", "RNNSequence[window]"):
        assert composite in labels


@pytest.mark.parametrize("label,gate,inputs,diff", CASES, ids=[c[0] for c in CASES])
def test_gate_backward_matches_finite_differences(label, gate, inputs, diff):
    inputs = [np.array(x) for x in inputs]  # the checker perturbs in place: private copies
    for i in diff:
        assert inputs[i].dtype == np.float64
    errors = check_gate(gate, inputs, diff)
    assert set(errors) == {f"input {i}" for i in diff}
    for name, err in errors.items():
        assert err < GATE_TOL, f"{label} {name}: relative error {err:.2e}"


def test_checker_sees_a_wrong_backward():
    """The check is not vacuous: a gradient off by a little is reported."""

    class BadTanh(gates.Tanh):
        def backward(self, y, dy):
            return ((1.0 - y * y) * dy * 1.001,)

    x = np.random.default_rng(0).standard_normal((3, 4))
    assert check_gate(BadTanh(), [x], [0])["input 0"] > 1e-4


def test_relative_error_basics():
    a = np.array([1.0, -2.0, 3.0])
    assert relative_error(a, a) == 0.0
    assert relative_error(a, a + np.array([0, 0, 0.3])) == pytest.approx(0.3 / 3.3)
    assert relative_error(np.zeros(0), np.zeros(0)) == 0.0


# ---------------------------------------------------------------- forward values


def test_forwards_match_definitions():
    gen = np.random.default_rng(1)
    x, w = gen.standard_normal((4, 3)), gen.standard_normal((5, 3))
    b = gen.standard_normal(5)
    np.testing.assert_array_equal(gates.MatMul().forward(x, w)[0], x @ w.T)
    np.testing.assert_array_equal(gates.BiasAdd().forward(x @ w.T, b)[0], x @ w.T + b)
    np.testing.assert_array_equal(gates.Add().forward(x, 2 * x)[0], 3 * x)
    np.testing.assert_array_equal(gates.Mul().forward(x, x)[0], x * x)
    np.testing.assert_allclose(gates.Tanh().forward(x)[0], np.tanh(x), rtol=0, atol=0)
    np.testing.assert_allclose(gates.Sigmoid().forward(x)[0], 1 / (1 + np.exp(-x)), rtol=1e-15)
    np.testing.assert_array_equal(gates.Relu().forward(x)[0], np.where(x > 0, x, 0))
    ids = np.array([2, 0, 2, 4])
    np.testing.assert_array_equal(gates.Embedding().forward(w, ids)[0], w[ids])


def test_embedding_backward_is_scatter_add_and_ids_get_none():
    table = np.zeros((6, 2))
    ids = np.array([1, 1, 5, 1])
    dy = np.arange(8.0).reshape(4, 2)
    d_table, d_ids = gates.Embedding().backward(gates.Embedding().forward(table, ids)[1], dy)
    assert d_ids is None
    expected = np.zeros((6, 2))
    expected[1] = dy[0] + dy[1] + dy[3]
    expected[5] = dy[2]
    np.testing.assert_array_equal(d_table, expected)


def test_softmax_ce_targets_and_weights_get_no_gradient():
    logits = np.random.default_rng(2).standard_normal((3, 4))
    gate = gates.SoftmaxCE()
    _, saved = gate.forward(logits, np.array([0, 3, 1]), np.ones(3))
    dz, dt, dw = gate.backward(saved, 1.0)
    assert dz.shape == logits.shape and dt is None and dw is None


# ---------------------------------------------------------------- properties

ids_and_rows = st.integers(0, 12).flatmap(
    lambda n: st.tuples(
        st.integers(1, 6),  # num_rows
        hnp.arrays(np.float64, (n, 3), elements=st.floats(-1e3, 1e3, allow_nan=False)),
        st.lists(st.integers(0, 5), min_size=n, max_size=n),
    )
)


@settings(max_examples=150, deadline=None)
@given(ids_and_rows)
def test_scatter_rows_equals_add_at(case):
    num_rows, rows, ids = case
    ids = np.array([i % num_rows for i in ids], dtype=np.intp)
    expected = np.zeros((num_rows, rows.shape[1]))
    np.add.at(expected, ids, rows)
    got = gates.scatter_rows(ids, rows, num_rows)
    assert got.shape == (num_rows, 3) and got.dtype == rows.dtype
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_add_rows_with_distinct_ids_and_with_a_repeat(dtype):
    """Distinct ids (one fancy-index add) and the same ids with one repeated (summed first)
    both equal np.add.at, in place and in the array's dtype."""
    gen = np.random.default_rng(3)
    start = gen.standard_normal((9, 4)).astype(dtype)
    rows = gen.standard_normal((5, 4)).astype(dtype)
    for ids in (np.array([7, 0, 3, 8, 2]), np.array([7, 0, 3, 7, 2])):
        out = start.copy()
        expected = start.copy()
        np.add.at(expected, ids, rows)
        assert gates.add_rows(out, ids, rows) is out
        assert out.dtype == dtype
        np.testing.assert_allclose(out, expected, rtol=1e-6 if dtype == np.float32 else 1e-15)


def test_scatter_rows_repeats_and_empty():
    rows = np.ones((5, 2))
    np.testing.assert_array_equal(gates.scatter_rows(np.array([3, 3, 3, 3, 3]), rows, 4),
                                  [[0, 0], [0, 0], [0, 0], [5, 5]])
    empty = gates.scatter_rows(np.zeros(0, dtype=np.intp), np.zeros((0, 2)), 3)
    np.testing.assert_array_equal(empty, np.zeros((3, 2)))
    f32 = gates.scatter_rows(np.array([0, 2]), np.ones((2, 2), dtype=np.float32), 3)
    assert f32.dtype == np.float32


logit_rows = hnp.arrays(np.float64, st.tuples(st.integers(1, 5), st.integers(1, 8)),
                        elements=st.floats(-50, 50, allow_nan=False))


@settings(max_examples=150, deadline=None)
@given(logit_rows, st.sampled_from([0.0, 1e4, -1e4]))
def test_log_softmax_normalised_and_shift_invariant(z, offset):
    out = gates.log_softmax(z + offset)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(np.log(np.exp(out).sum(axis=1)), 0.0, atol=1e-12)
    np.testing.assert_allclose(out, gates.log_softmax(z), atol=1e-9)


@settings(max_examples=100, deadline=None)
@given(logit_rows, st.sampled_from([1e4, 1e100, 1e298]))
def test_log_softmax_stable_for_huge_magnitudes(z, scale):
    with np.errstate(over="raise", invalid="raise", divide="ignore"):
        out = gates.log_softmax(z * scale)
    assert not np.any(np.isnan(out)) and not np.any(out == np.inf)
    assert np.all(out <= 0)
    np.testing.assert_allclose(np.log(np.exp(out).sum(axis=1)), 0.0, atol=1e-12)


def test_log_softmax_huge_logits():
    z = np.array([[1e4, 0.0, -1e4], [1e4, 1e4, 1e4]])
    out = gates.log_softmax(z)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out[0], [0.0, -1e4, -2e4])
    np.testing.assert_allclose(out[1], -np.log(3.0))


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 6), st.integers(2, 7), st.integers(0, 2**32 - 1))
def test_softmax_ce_with_weights_equals_manual(n, v, seed):
    gen = np.random.default_rng(seed)
    logits = gen.standard_normal((n, v)) * 5
    targets = gen.integers(0, v, n)
    weights = gen.random(n) * (gen.random(n) < 0.7)
    loss, saved = gates.SoftmaxCE().forward(logits, targets, weights)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    manual = -sum(weights[i] * np.log(p[i, targets[i]]) for i in range(n))
    assert loss == pytest.approx(manual, rel=1e-12, abs=1e-12)
    dz, _, _ = gates.SoftmaxCE().backward(saved, 2.0)
    onehot = np.eye(v)[targets]
    np.testing.assert_allclose(dz, 2.0 * weights[:, None] * (p - onehot), rtol=1e-12, atol=1e-14)


def test_softmax_ce_stable_for_huge_logits():
    logits = np.array([[1e4, 0.0], [0.0, 1e4]])
    loss, saved = gates.SoftmaxCE().forward(logits, np.array([0, 0]), np.array([1.0, 1.0]))
    assert loss == pytest.approx(1e4)
    dz, _, _ = gates.SoftmaxCE().backward(saved, 1.0)
    assert np.all(np.isfinite(dz))
    np.testing.assert_allclose(dz, [[0.0, 0.0], [-1.0, 1.0]], atol=1e-300)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sigmoid_stable_at_extremes(dtype):
    x = np.array([[-1000.0, -50.0, 0.0, 50.0, 1000.0]], dtype=dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y, saved = gates.Sigmoid().forward(x)
        (dx,) = gates.Sigmoid().backward(saved, np.ones_like(x))
    assert y.dtype == dtype and np.all(np.isfinite(y)) and np.all(np.isfinite(dx))
    assert y[0, 0] == 0.0 or y[0, 0] < 1e-300
    assert y[0, 2] == 0.5 and y[0, 4] == 1.0
    assert np.all((y >= 0) & (y <= 1))
    np.testing.assert_allclose(y[0, 1], np.exp(-50.0) / (1 + np.exp(-50.0)), rtol=1e-6)


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(np.float64, st.integers(1, 20), elements=st.floats(-700, 700)))
def test_sigmoid_matches_formula(x):
    y, _ = gates.Sigmoid().forward(x)
    np.testing.assert_allclose(y, 1.0 / (1.0 + np.exp(-x)), rtol=1e-14, atol=1e-300)
    np.testing.assert_allclose(1.0 - y, gates.Sigmoid().forward(-x)[0], rtol=1e-9, atol=1e-15)
