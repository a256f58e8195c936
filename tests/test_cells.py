"""Composite gates equal the composition of the primitive gates they replace.

Every check builds the same computation twice on a ``Tape``: once from the
primitive gates of ``gates.py`` (MatMul, Add, BiasAdd, Tanh, SoftmaxCE), one
step at a time, and once with the fused gate, then compares the loss and
every gradient. The truncated BPTT modes are checked against the truncation
done by hand: chunk by chunk with the state carried and the gradient cut
(``"chunk"``), and one fresh graph per loss term (``"window"``).
"""
import numpy as np
import pytest

from rnnlab.cells import RNNSequence, RNNStep, check_bptt
from rnnlab.gates import Add, BiasAdd, MatMul, SoftmaxCE, Tanh
from rnnlab.graph import Tape
from rnnlab import output
from rnnlab.output import LinearSoftmaxCE, _block_rows, log_probs, nll_rows

TOL = 1e-12


def assert_close(actual, expected, tol=TOL, what=""):
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    scale = max(np.abs(expected).max(initial=0.0), 1e-300)
    err = np.abs(actual - expected).max(initial=0.0) / scale
    assert err < tol, f"{what}: relative difference {err:.2e}"


def problem(T=6, B=3, H=5, V=7, seed=0, bias=True):
    gen = np.random.default_rng(seed)
    return dict(
        T=T, B=B, H=H, V=V,
        xin=gen.standard_normal((T * B, H)),
        h0=gen.standard_normal((B, H)) * 0.5,
        W=gen.standard_normal((H, H)) * 0.6,
        b=gen.standard_normal(H) if bias else None,
        D=gen.standard_normal((V, H)),
        targets=gen.integers(0, V, T * B),
        weights=gen.random(T * B),
    )


def primitive_steps(tape, p, xin_nodes, start, W, b, lo, hi):
    """States of steps lo..hi-1 from primitives: s = tanh(xin_t + s W^T + b), starting at ``start``."""
    h, states = start, []
    for t in range(lo, hi):
        pre = tape.apply(Add(), xin_nodes[t], tape.apply(MatMul(), h, W))
        if b is not None:
            pre = tape.apply(BiasAdd(), pre, b)
        h = tape.apply(Tanh(), pre)
        states.append(h)
    return states


def readout_loss(tape, p, states_by_step, D):
    """sum over the given steps t of SoftmaxCE(s_t D^T, targets_t, weights_t), added with Add."""
    B, loss = p["B"], None
    for t, s in states_by_step:
        rows = slice(t * B, (t + 1) * B)
        term = tape.apply(SoftmaxCE(), tape.apply(MatMul(), s, D), p["targets"][rows], p["weights"][rows])
        loss = term if loss is None else tape.apply(Add(), loss, term)
    return loss


def primitive_full(p):
    """Loss, states and gradients of the whole unrolled sequence built from primitives."""
    T, B = p["T"], p["B"]
    tape = Tape()
    xin = [tape.param(p["xin"][t * B:(t + 1) * B].copy()) for t in range(T)]
    h0, W, D = tape.param(p["h0"]), tape.param(p["W"]), tape.param(p["D"])
    b = None if p["b"] is None else tape.param(p["b"])
    states = primitive_steps(tape, p, xin, h0, W, b, 0, T)
    loss = readout_loss(tape, p, list(enumerate(states)), D)
    tape.backward(loss)
    return dict(loss=float(loss.value), states=np.concatenate([s.value for s in states]),
                xin=np.concatenate([x.grad for x in xin]), h0=h0.grad, W=W.grad,
                b=None if b is None else b.grad, D=D.grad)


def fused(p, gate):
    """The same loss with the fused sequence gate: RNNSequence -> MatMul -> SoftmaxCE."""
    tape = Tape()
    xin, h0, W, D = (tape.param(p[k].copy()) for k in ("xin", "h0", "W", "D"))
    b = None if p["b"] is None else tape.param(p["b"])
    states = tape.apply(gate, xin, h0, W, b)
    loss = tape.apply(SoftmaxCE(), tape.apply(MatMul(), states, D), p["targets"], p["weights"])
    value = states.value.copy()
    tape.backward(loss)
    return dict(loss=float(loss.value), states=value, xin=xin.grad, h0=h0.grad, W=W.grad,
                b=None if b is None else b.grad, D=D.grad)


def compare(got, expected, keys=("xin", "h0", "W", "b", "D"), tol=TOL):
    assert got["loss"] == pytest.approx(expected["loss"], rel=tol, abs=0)
    assert_close(got["states"], expected["states"], tol, "states")
    for k in keys:
        if expected[k] is None:
            assert got[k] is None, k
        else:
            assert_close(got[k], expected[k], tol, k)


# ---------------------------------------------------------------- RNNStep


@pytest.mark.parametrize("bias", [True, False])
def test_rnn_step_equals_primitives(bias):
    p = problem(T=1, B=4, bias=bias, seed=3)
    gen = np.random.default_rng(4)
    dh = gen.standard_normal((p["B"], p["H"]))

    tape = Tape()
    xin, h_prev, W = tape.param(p["xin"]), tape.param(p["h0"]), tape.param(p["W"])
    b = tape.param(p["b"]) if bias else None
    (h,) = primitive_steps(tape, p, [xin], h_prev, W, b, 0, 1)
    tape.backward(h, seed=dh)  # inject d(output) directly

    step = RNNStep()
    out, saved = step.forward(p["xin"], p["h0"], p["W"], p["b"])
    dx, dh_prev, dW, db = step.backward(saved, dh)
    assert_close(out, h.value, what="h")
    assert_close(dx, xin.grad, what="xin")
    assert_close(dh_prev, h_prev.grad, what="h_prev")
    assert_close(dW, W.grad, what="W_hh")
    if bias:
        assert_close(db, b.grad, what="b_hh")
    else:
        assert db is None


def test_rnn_step_inputs_unchanged():
    p = problem(T=1, seed=5)
    copies = {k: p[k].copy() for k in ("xin", "h0", "W", "b")}
    step = RNNStep()
    _, saved = step.forward(p["xin"], p["h0"], p["W"], p["b"])
    step.backward(saved, np.ones((p["B"], p["H"])))
    for k, v in copies.items():
        np.testing.assert_array_equal(p[k], v, err_msg=k)


# ---------------------------------------------------------------- RNNSequence full


@pytest.mark.parametrize("T,B,bias", [(1, 2, True), (6, 3, True), (9, 1, False), (5, 4, False)])
def test_rnn_sequence_full_equals_primitives(T, B, bias):
    p = problem(T=T, B=B, bias=bias, seed=T * 10 + B)
    compare(fused(p, RNNSequence(T, "full")), primitive_full(p))


def test_rnn_sequence_forward_values_and_inputs_unchanged():
    p = problem(T=5, B=2, seed=8)
    copies = {k: p[k].copy() for k in ("xin", "h0", "W", "b")}
    states, _ = RNNSequence(5).forward(p["xin"], p["h0"], p["W"], p["b"])
    h, rows = p["h0"], []
    for t in range(5):
        h = np.tanh(p["xin"][t * 2:(t + 1) * 2] + h @ p["W"].T + p["b"])
        rows.append(h)
    assert_close(states, np.concatenate(rows), what="states")
    for k, v in copies.items():
        np.testing.assert_array_equal(p[k], v, err_msg=k)


# ---------------------------------------------------------------- chunk


def chunk_by_hand(p, K):
    """Full BPTT on each chunk of K steps, the state carried forward as a constant.

    Returns the fused-gate-like result: states, d xin, d W, d b for a random d_states.
    """
    T, B, H = p["T"], p["B"], p["H"]
    d_states = np.random.default_rng(99).standard_normal((T * B, H))
    h = p["h0"]
    states, dxin = [], []
    dW = np.zeros_like(p["W"])
    db = None if p["b"] is None else np.zeros_like(p["b"])
    for lo in range(0, T, K):
        n = min(K, T - lo)
        rows = slice(lo * B, (lo + n) * B)
        gate = RNNSequence(n, "full")
        out, saved = gate.forward(p["xin"][rows], h, p["W"], p["b"])
        dx, _dh, dw, dbias = gate.backward(saved, d_states[rows])  # _dh: cut, not passed back
        states.append(out.copy())
        dxin.append(dx)
        dW += dw
        if db is not None:
            db += dbias
        h = out[(n - 1) * B:].copy()  # carried forward, a constant for the next chunk
    return d_states, np.concatenate(states), np.concatenate(dxin), dW, db


@pytest.mark.parametrize("T,K,bias", [(7, 3, True), (6, 3, False), (6, 1, True), (6, 6, True),
                                      (4, 10, True), (1, 1, True)])
def test_chunk_equals_full_per_chunk_with_carried_state(T, K, bias):
    p = problem(T=T, B=2, bias=bias, seed=T + 7 * K)
    d_states, states, dxin, dW, db = chunk_by_hand(p, K)
    gate = RNNSequence(T, "chunk", K)
    out, saved = gate.forward(p["xin"], p["h0"], p["W"], p["b"])
    assert_close(out, states, what="states")
    gx, gh0, gW, gb = gate.backward(saved, d_states)
    assert_close(gx, dxin, what="xin")
    assert_close(gW, dW, what="W_hh")
    if bias:
        assert_close(gb, db, what="b_hh")
    else:
        assert gb is None
    # h0 starts the first chunk: the gradient stops there.
    np.testing.assert_array_equal(gh0, np.zeros_like(p["h0"]))


def test_chunk_really_truncates():
    """Sanity: with K < T the chunked gradient differs from the full one (the check can fail)."""
    p = problem(T=6, B=2, seed=1)
    d = np.random.default_rng(0).standard_normal((12, p["H"]))
    grads = {}
    for mode, K in (("full", None), ("chunk", 2)):
        gate = RNNSequence(6, mode, K)
        _, saved = gate.forward(p["xin"], p["h0"], p["W"], p["b"])
        grads[mode] = gate.backward(saved, d)
    assert np.abs(grads["full"][2] - grads["chunk"][2]).max() > 1e-3


# ---------------------------------------------------------------- window


@pytest.mark.parametrize("T,K", [(6, 5), (6, 6), (6, 50), (1, 1), (3, None)])
def test_window_with_long_truncation_equals_full(T, K):
    p = problem(T=T, B=2, seed=T + 3)
    compare(fused(p, RNNSequence(T, "window", K)), fused(p, RNNSequence(T, "full")), tol=1e-13)
    compare(fused(p, RNNSequence(T, "window", K)), primitive_full(p))


def window_brute_force(p, K):
    """The tutorial's window, literally: for each t a fresh primitive graph over steps
    t-K .. t starting from the constant state s_{t-K-1} (h0, a parameter, when t-K <= 0),
    the loss at step t only; the gradients of all these graphs summed."""
    T, B = p["T"], p["B"]
    states = fused(p, RNNSequence(T, "full"))["states"]  # the forward values, for the constants
    total = dict(loss=0.0, states=states, xin=np.zeros_like(p["xin"]), h0=np.zeros_like(p["h0"]),
                 W=np.zeros_like(p["W"]), b=None if p["b"] is None else np.zeros_like(p["b"]),
                 D=np.zeros_like(p["D"]))
    for t in range(T):
        lo = max(0, t - K)
        tape = Tape()
        xin = {s: tape.param(p["xin"][s * B:(s + 1) * B].copy()) for s in range(lo, t + 1)}
        W, D = tape.param(p["W"]), tape.param(p["D"])
        b = None if p["b"] is None else tape.param(p["b"])
        start = tape.param(p["h0"]) if lo == 0 else tape.constant(states[(lo - 1) * B:lo * B])
        steps = primitive_steps(tape, p, xin, start, W, b, lo, t + 1)
        loss = readout_loss(tape, p, [(t, steps[-1])], D)
        tape.backward(loss)
        total["loss"] += float(loss.value)
        for s, node in xin.items():
            if node.grad is not None:
                total["xin"][s * B:(s + 1) * B] += node.grad
        for k, node in (("W", W), ("D", D), ("b", b)):
            if node is not None:
                total[k] += node.grad
        if lo == 0:
            total["h0"] += start.grad
        else:
            assert start.grad is None
    return total


@pytest.mark.parametrize("T,K,bias", [(7, 1, True), (7, 2, True), (7, 3, False), (8, 4, True),
                                      (5, 2, False), (2, 1, True)])
def test_window_equals_brute_force_per_loss(T, K, bias):
    p = problem(T=T, B=3, bias=bias, seed=100 + T * K)
    got = fused(p, RNNSequence(T, "window", K))
    expected = window_brute_force(p, K)
    compare(got, expected)
    if K < T - 1:  # and it is a truncation: differs from full BPTT
        full = fused(p, RNNSequence(T, "full"))
        assert np.abs(got["W"] - full["W"]).max() > 1e-6


# ---------------------------------------------------------------- validation


def test_bptt_mode_and_truncate_validation():
    for mode in ("full", "chunk", "window"):
        check_bptt(mode, None)
        check_bptt(mode, 3)
    with pytest.raises(ValueError, match="bptt"):
        RNNSequence(3, "tbptt")
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="truncate"):
            RNNSequence(3, "chunk", bad)


# ---------------------------------------------------------------- LinearSoftmaxCE


def linear_softmax_primitives(hidden, weight, bias, targets, weights):
    tape = Tape()
    h, w = tape.param(hidden.copy()), tape.param(weight.copy())
    b = None if bias is None else tape.param(bias.copy())
    z = tape.apply(MatMul(), h, w)
    if b is not None:
        z = tape.apply(BiasAdd(), z, b)
    loss = tape.apply(SoftmaxCE(), z, targets, weights)
    tape.backward(loss)
    return float(loss.value), h.grad, w.grad, None if b is None else b.grad


def linear_softmax_fused(hidden, weight, bias, targets, weights):
    tape = Tape()
    h, w = tape.param(hidden.copy()), tape.param(weight.copy())
    b = None if bias is None else tape.param(bias.copy())
    loss = tape.apply(LinearSoftmaxCE(), h, w, b, targets, weights)
    tape.backward(loss)
    return float(loss.value), h.grad, w.grad, None if b is None else b.grad


def check_linear_softmax(N, H, V, bias, seed):
    gen = np.random.default_rng(seed)
    hidden = gen.standard_normal((N, H))
    weight = gen.standard_normal((V, H)) * 0.5
    b = gen.standard_normal(V) if bias else None
    targets = gen.integers(0, V, N)
    weights = gen.random(N) * (gen.random(N) < 0.8)
    got = linear_softmax_fused(hidden, weight, b, targets, weights)
    expected = linear_softmax_primitives(hidden, weight, b, targets, weights)
    assert got[0] == pytest.approx(expected[0], rel=TOL, abs=0)
    for name, g, e in zip(("hidden", "weight", "bias"), got[1:], expected[1:]):
        if e is None:
            assert g is None
        else:
            assert_close(g, e, what=name)


@pytest.mark.parametrize("N,H,V,bias", [(12, 5, 7, True), (12, 5, 7, False), (1, 3, 2, True),
                                        (200, 16, 3000, True)])
def test_linear_softmax_ce_equals_primitives(N, H, V, bias):
    check_linear_softmax(N, H, V, bias, seed=N + V)


@pytest.mark.parametrize("bias", [True, False])
def test_linear_softmax_ce_equals_primitives_over_several_blocks(monkeypatch, bias):
    """V = 3000 in float64 with N chosen so the block loop runs several blocks and a ragged last one."""
    monkeypatch.setattr(output, "BLOCK_BYTES", 1 << 20)
    V = 3000
    rows = _block_rows(V, 8)
    N = 4 * rows + rows // 2 + 1
    assert rows < N and N % rows and N // rows >= 4
    check_linear_softmax(N, 16, V, bias, seed=31 + bias)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("N,block_bytes,gemm,rows", [
    (12, 17 * 17 * 8, 1 << 40, 17),  # blocks of W held in L2: 17 rows each, a ragged last one
    (20, 1 << 30, 20 * 17 * 30, 30),  # small products: 30 rows each
    (1, 8, 1 << 40, 1),  # a row at a time
    (output.SMALL_N, 1 << 30, 1 << 40, 3000),  # a block per part
])
def test_linear_softmax_ce_few_rows_over_weight_blocks(monkeypatch, bias, N, block_bytes, gemm, rows):
    """A batch of few rows is held transposed and walks W in blocks; the loss and gradients still
    equal the primitives'."""
    monkeypatch.setattr(output, "WEIGHT_BLOCK_BYTES", block_bytes)
    monkeypatch.setattr(output, "SMALL_GEMM", gemm)
    assert min(output._few_rows_block(N, 17, 8), 3000) == rows
    calls = []
    few_rows = output._exp_part_few_rows
    monkeypatch.setattr(output, "_exp_part_few_rows", lambda *a: calls.append(a[3:5]) or few_rows(*a))
    check_linear_softmax(N, 16, 3000, bias, seed=N + bias)
    assert calls  # the few-rows path ran


@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_softmax_ce_few_rows_in_float32(set_threads, with_bias):
    """float32 few rows: held transposed, one product per part (no blocks), and equal to the float64
    layer to float32 precision, with one thread and with two."""
    assert output._few_rows_block(20, 101, 4) >= 1 << 40
    gen = np.random.default_rng(12)
    N, H, V = 20, 8, 3000
    hidden, weight = gen.standard_normal((N, H)), gen.standard_normal((V, H)) * 0.3
    bias = gen.standard_normal(V) if with_bias else None
    targets, weights = gen.integers(0, V, N), np.full(N, 1.0 / N)
    l64 = linear_softmax_fused(hidden, weight, bias, targets, weights)
    for threads in (1, 2):
        set_threads(threads)
        l32 = linear_softmax_fused(hidden.astype(np.float32), weight.astype(np.float32),
                                   None if bias is None else bias.astype(np.float32), targets,
                                   weights.astype(np.float32))
        assert l32[0] == pytest.approx(l64[0], rel=1e-5)
        for got, want, name in zip(l32[1:], l64[1:], ("hidden", "weight", "bias")):
            if want is None:
                assert got is None
            else:
                assert got.dtype == np.float32
                assert_close(got, want, tol=1e-4, what=f"{name} float32")


def test_linear_softmax_ce_more_rows_than_few_keeps_the_row_blocks(monkeypatch):
    monkeypatch.setattr(output, "_exp_part_few_rows", lambda *a: pytest.fail("few-rows path for N > SMALL_N"))
    check_linear_softmax(output.SMALL_N + 1, 4, 50, True, seed=5)


@pytest.mark.parametrize("block_bytes", [8, 7 * 8 * 3, 7 * 8 * 5 - 1])
def test_linear_softmax_ce_small_blocks(monkeypatch, block_bytes):
    """The block size itself is arbitrary: one row per block, 3 rows, 4 rows all agree."""
    monkeypatch.setattr(output, "BLOCK_BYTES", block_bytes)
    assert _block_rows(7, 8) == max(1, block_bytes // 56)
    check_linear_softmax(23, 5, 7, True, seed=block_bytes)
    gen = np.random.default_rng(0)
    hidden, weight, bias = gen.standard_normal((23, 5)), gen.standard_normal((7, 5)), gen.standard_normal(7)
    targets = gen.integers(0, 7, 23)
    nll = nll_rows(hidden, weight, bias, targets)
    assert_close(nll, -log_probs(hidden, weight, bias)[np.arange(23), targets], what="nll_rows")


def test_linear_softmax_ce_block_boundaries_float32(monkeypatch):
    """float32 blocks are twice as many rows; the result still matches float64 to float32 precision."""
    monkeypatch.setattr(output, "BLOCK_BYTES", 1 << 20)
    gen = np.random.default_rng(11)
    N, H, V = 150, 8, 3000
    assert _block_rows(V, 4) < N
    hidden, weight, bias = gen.standard_normal((N, H)), gen.standard_normal((V, H)) * 0.3, gen.standard_normal(V)
    targets, weights = gen.integers(0, V, N), np.full(N, 1.0 / N)
    l64 = linear_softmax_fused(hidden, weight, bias, targets, weights)
    l32 = linear_softmax_fused(hidden.astype(np.float32), weight.astype(np.float32),
                               bias.astype(np.float32), targets, weights.astype(np.float32))
    assert l32[0] == pytest.approx(l64[0], rel=1e-5)
    assert l32[2].dtype == np.float32
    assert_close(l32[2], l64[2], tol=1e-4, what="weight float32")


def test_nll_rows_and_log_probs_agree_with_fused_loss():
    gen = np.random.default_rng(12)
    N, H, V = 300, 6, 3000  # nll_rows also streams over blocks
    hidden, weight, bias = gen.standard_normal((N, H)), gen.standard_normal((V, H)), gen.standard_normal(V)
    targets = gen.integers(0, V, N)
    nll = nll_rows(hidden, weight, bias, targets)
    logp = log_probs(hidden, weight, bias)
    assert_close(nll, -logp[np.arange(N), targets], what="nll vs log_probs")
    np.testing.assert_allclose(np.exp(logp).sum(axis=1), 1.0, rtol=1e-12)
    weights = gen.random(N)
    loss, _ = LinearSoftmaxCE().forward(hidden, weight, bias, targets, weights)
    assert loss == pytest.approx(float((weights * nll).sum()), rel=1e-12)


# ---------------------------------------------------------------- LinearSoftmaxCE: extremes, threads, buffers


def extreme_problem(N=300, H=4, V=50, seed=21, dtype=np.float64):
    """Rows whose logits overflow exp (+-1e3 scale), all-very-negative rows, and ordinary rows."""
    gen = np.random.default_rng(seed)
    hidden = gen.standard_normal((N, H))
    hidden[N // 60] *= 400
    hidden[N // 2] *= -400
    hidden[N - N // 6] *= 1e3
    weight = gen.standard_normal((V, H))
    bias = gen.standard_normal(V)
    bias_low = bias - 800.0  # every exp underflows to 0 without a shift
    targets = gen.integers(0, V, N)
    weights = gen.random(N)
    return [a.astype(dtype) for a in (hidden, weight, bias, bias_low)] + [targets, weights.astype(dtype)]


@pytest.mark.parametrize("low", [False, True])
def test_linear_softmax_ce_equals_primitives_for_extreme_logits(low):
    hidden, weight, bias, bias_low, targets, weights = extreme_problem()
    b = bias_low if low else bias
    with np.errstate(over="ignore", under="ignore"):
        got = linear_softmax_fused(hidden, weight, b, targets, weights)
        expected = linear_softmax_primitives(hidden, weight, b, targets, weights)
        nll = nll_rows(hidden, weight, b, targets)
    assert np.isfinite(got[0]) and all(np.isfinite(g).all() for g in got[1:])
    assert got[0] == pytest.approx(expected[0], rel=TOL, abs=0)
    for name, g, e in zip(("hidden", "weight", "bias"), got[1:], expected[1:]):
        assert_close(g, e, what=name)
    assert_close(nll, -log_probs(hidden, weight, b)[np.arange(len(targets)), targets], what="nll_rows")


def test_linear_softmax_ce_does_not_change_its_inputs():
    hidden, weight, bias, _, targets, weights = extreme_problem(seed=22)
    copies = [a.copy() for a in (hidden, weight, bias, targets, weights)]
    with np.errstate(over="ignore"):
        gate = LinearSoftmaxCE()
        _, saved = gate.forward(hidden, weight, bias, targets, weights)
        gate.backward(saved, 1.0)
        nll_rows(hidden, weight, bias, targets)
    for a, c in zip((hidden, weight, bias, targets, weights), copies):
        np.testing.assert_array_equal(a, c)


def test_linear_softmax_ce_independent_of_thread_count(set_threads):
    hidden, weight, bias, _, targets, weights = extreme_problem(N=1000, V=300, seed=23)
    results = []
    for n in (1, 3):
        set_threads(n)
        with np.errstate(over="ignore"):
            results.append(linear_softmax_fused(hidden, weight, bias, targets, weights))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-14)
    for a, b in zip(results[0][1:], results[1][1:]):
        assert_close(a, b, tol=1e-14)


@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_softmax_ce_huge_logits_raise_no_floating_point_warning(with_bias):
    import warnings

    hidden, weight, bias, _, targets, weights = extreme_problem(N=20, seed=24)  # one thread
    bias = bias if with_bias else None
    weight[:, 0] = 1.0
    hidden[3] = [709.0, 0, 0, 0]  # every exp finite, their sum not
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, saved = LinearSoftmaxCE().forward(hidden, weight, bias, targets, weights)
        nll_rows(hidden, weight, bias, targets)
    assert np.isfinite(loss)


def test_linear_softmax_ce_backward_twice_does_not_corrupt_later_forwards():
    gen = np.random.default_rng(25)
    N, H, V = 6, 4, 9

    def problem_args():
        return (gen.standard_normal((N, H)), gen.standard_normal((V, H)), gen.standard_normal(V),
                gen.integers(0, V, N), np.ones(N))

    gate = LinearSoftmaxCE()
    _, saved = gate.forward(*problem_args())
    first, second = gate.backward(saved, 1.0), gate.backward(saved, 1.0)
    for a, b in zip(first[:3], second[:3]):
        np.testing.assert_array_equal(a, b)  # a function of its arguments: same answer twice
    b_args, c_args = problem_args(), problem_args()
    _, saved_b = gate.forward(*b_args)
    _, saved_c = gate.forward(*c_args)  # B's forward is still waiting for its backward
    got_b = gate.backward(saved_b, 1.0)
    expected_b = linear_softmax_primitives(*b_args)
    for name, g, e in zip(("hidden", "weight", "bias"), got_b[:3], expected_b[1:]):
        assert_close(g, e, what=name)


@pytest.mark.parametrize("max_rows", [None, 7, 1])
def test_nll_rows_over_many_row_blocks(monkeypatch, max_rows):
    """nll_rows makes its logits max_rows rows at a time (LOGITS_BYTES by default): N well above that."""
    monkeypatch.setattr(output, "LOGITS_BYTES", 1000 * 40 * 8)  # 1000 rows by default
    gen = np.random.default_rng(26)
    N, H, V = 2600 if max_rows is None else 60, 5, 40
    hidden, weight, bias = gen.standard_normal((N, H)), gen.standard_normal((V, H)), gen.standard_normal(V)
    targets = gen.integers(0, V, N)
    kw = {} if max_rows is None else {"max_rows": max_rows}
    nll = nll_rows(hidden, weight, bias, targets, **kw)
    assert_close(nll, -log_probs(hidden, weight, bias)[np.arange(N), targets], what="nll_rows")
    assert_close(nll_rows(hidden, weight, None, targets, **kw),
                 -log_probs(hidden, weight, None)[np.arange(N), targets], what="nll_rows no bias")
