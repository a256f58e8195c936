"""The LSTM and GRU sequence gates, and the model running them.

* Each fused gate equals the same computation built on a ``Tape`` from the
  primitive gates (MatMul, Add, BiasAdd, Sigmoid, Tanh, Mul, and two helpers
  written here: ``Slice`` for a block of the G*H columns, ``OneMinus`` for the
  GRU's 1 - z), one step at a time: outputs, final state and every gradient,
  1e-12 in float64.
* Finite differences for every input of each gate, and for every parameter of
  models in chunk and window BPTT (``gradcheck.check_model``'s truncated losses).
* Window BPTT equals the tutorial's loop written out literally (for each t,
  the loss at t backpropagated one step at a time through at most K earlier
  steps, through h and c, and summed); chunk BPTT equals full BPTT chunk by
  chunk with the state carried.
* The model's carried state: (h, c) for the LSTM, the array for the GRU.

The comparison with PyTorch is in ``test_peer_gated.py``.
"""
import warnings

import numpy as np
import pytest

from rnnlab import LanguageModel
from rnnlab.cells import BPTT_MODES, CELLS, GRUSequence, LSTMSequence
from rnnlab.gates import Add, BiasAdd, Gate, MatMul, Mul, Sigmoid, SoftmaxCE, Tanh
from rnnlab.gradcheck import ModelCase, check_gate, check_model
from rnnlab.graph import Tape

from test_cells import assert_close, readout_loss  # the tanh RNN tests' helpers

TOL = 1e-12
GATES = {"lstm": LSTMSequence, "gru": GRUSequence}
BLOCKS = {"lstm": 4, "gru": 3}




# ---------------------------------------------------------------- helpers: two small gates


class Slice(Gate):
    """Columns lo:hi of x (N, D) -> (N, hi - lo); the gradient is dy put back among zeros."""

    def __init__(self, lo, hi):
        self.lo, self.hi = lo, hi

    def forward(self, x):
        return x[:, self.lo:self.hi].copy(), x.shape

    def backward(self, shape, dy):
        dx = np.zeros(shape, dtype=dy.dtype)
        dx[:, self.lo:self.hi] = dy
        return (dx,)


class OneMinus(Gate):
    """1 - x (the GRU's 1 - z)."""

    def forward(self, x):
        return 1.0 - x, None

    def backward(self, saved, dy):
        return (-dy,)


def test_the_helper_gates_pass_finite_differences():
    gen = np.random.default_rng(0)
    for gate in (Slice(2, 5), OneMinus()):
        errors = check_gate(gate, [gen.standard_normal((3, 7))], [0])
        assert max(errors.values()) < 1e-9, (gate, errors)


# ---------------------------------------------------------------- the problems


def problem(cell, T=6, B=3, H=4, V=7, seed=0, bias=True):
    """A random float64 problem: xin (T*B, G*H), the initial state, W_hh, b_hh, a decoder D (V, H)."""
    gen = np.random.default_rng(seed)
    G = BLOCKS[cell]
    return dict(
        cell=cell, T=T, B=B, H=H, V=V,
        xin=gen.standard_normal((T * B, G * H)),
        state=[gen.standard_normal((B, H)) * 0.5 for _ in CELLS[cell].state],
        W=gen.standard_normal((G * H, H)) * 0.6,
        b=gen.standard_normal(G * H) if bias else None,
        D=gen.standard_normal((V, H)),
        targets=gen.integers(0, V, T * B),
        weights=gen.random(T * B),
    )


def lstm_step_primitives(tape, x_t, h, c, W, b, H):
    """One LSTM step from primitives, PyTorch's equations, blocks i, f, g, o."""
    a = tape.apply(Add(), x_t, tape.apply(MatMul(), h, W))
    if b is not None:
        a = tape.apply(BiasAdd(), a, b)
    i, f, g, o = (tape.apply(Slice(k * H, (k + 1) * H), a) for k in range(4))
    i, f, o = (tape.apply(Sigmoid(), v) for v in (i, f, o))
    g = tape.apply(Tanh(), g)
    c = tape.apply(Add(), tape.apply(Mul(), f, c), tape.apply(Mul(), i, g))
    h = tape.apply(Mul(), o, tape.apply(Tanh(), c))
    return h, c


def gru_step_primitives(tape, x_t, h, W, b, H):
    """One GRU step from primitives, PyTorch's equations: the hh-side of n (b_hn included) inside r *."""
    q = tape.apply(MatMul(), h, W)
    if b is not None:
        q = tape.apply(BiasAdd(), q, b)
    x_r, x_z, x_n = (tape.apply(Slice(k * H, (k + 1) * H), x_t) for k in range(3))
    q_r, q_z, q_n = (tape.apply(Slice(k * H, (k + 1) * H), q) for k in range(3))
    r = tape.apply(Sigmoid(), tape.apply(Add(), x_r, q_r))
    z = tape.apply(Sigmoid(), tape.apply(Add(), x_z, q_z))
    n = tape.apply(Tanh(), tape.apply(Add(), x_n, tape.apply(Mul(), r, q_n)))
    h = tape.apply(Add(), tape.apply(Mul(), tape.apply(OneMinus(), z), n), tape.apply(Mul(), z, h))
    return (h,)


def primitive_steps(tape, p, xin_nodes, state, W, b, lo, hi):
    """Steps lo..hi-1 from primitives, starting from the state nodes; returns (outputs, final state)."""
    H, outputs = p["H"], []
    for t in range(lo, hi):
        if p["cell"] == "lstm":
            state = lstm_step_primitives(tape, xin_nodes[t], *state, W, b, H)
        else:
            state = gru_step_primitives(tape, xin_nodes[t], *state, W, b, H)
        outputs.append(state[0])
    return outputs, state


def primitive_full(p):
    """Loss, outputs, final state and every gradient of the unrolled sequence built from primitives."""
    T, B = p["T"], p["B"]
    tape = Tape()
    xin = [tape.param(p["xin"][t * B:(t + 1) * B].copy()) for t in range(T)]
    state = [tape.param(s.copy()) for s in p["state"]]
    W, D = tape.param(p["W"].copy()), tape.param(p["D"])
    b = None if p["b"] is None else tape.param(p["b"].copy())
    outputs, final = primitive_steps(tape, p, xin, state, W, b, 0, T)
    loss = readout_loss(tape, p, list(enumerate(outputs)), D)
    tape.backward(loss)
    return dict(loss=float(loss.value), outputs=np.concatenate([h.value for h in outputs]),
                final=[s.value for s in final], xin=np.concatenate([x.grad for x in xin]),
                state=[s.grad for s in state], W=W.grad, b=None if b is None else b.grad, D=D.grad)


def fused(p, gate):
    """The same loss with the fused sequence gate: gate -> MatMul D -> SoftmaxCE."""
    tape = Tape()
    xin = tape.param(p["xin"].copy())
    state = [tape.param(s.copy()) for s in p["state"]]
    W, D = tape.param(p["W"].copy()), tape.param(p["D"])
    b = None if p["b"] is None else tape.param(p["b"].copy())
    outputs = tape.apply(gate, xin, *state, W, b)
    loss = tape.apply(SoftmaxCE(), tape.apply(MatMul(), outputs, D), p["targets"], p["weights"])
    value = outputs.value.copy()
    tape.backward(loss)
    return dict(loss=float(loss.value), outputs=value, final=list(gate.final), xin=xin.grad,
                state=[s.grad for s in state], W=W.grad, b=None if b is None else b.grad, D=D.grad)


def compare(got, expected, tol=TOL):
    assert got["loss"] == pytest.approx(expected["loss"], rel=tol, abs=0)
    assert_close(got["outputs"], expected["outputs"], tol, "outputs")
    assert len(got["final"]) == len(expected["final"])
    for k, (a, e) in enumerate(zip(got["final"], expected["final"])):
        assert_close(a, e, tol, f"final state part {k}")
    for k, (a, e) in enumerate(zip(got["state"], expected["state"])):
        assert_close(a, e, tol, f"d initial state part {k}")
    for k in ("xin", "W", "b", "D"):
        if expected[k] is None:
            assert got[k] is None, k
        else:
            assert_close(got[k], expected[k], tol, k)


# ---------------------------------------------------------------- (a) equal to the primitives


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("T,B,H,bias", [(6, 3, 4, True), (6, 3, 4, False), (1, 2, 3, True), (9, 1, 5, True)])
def test_sequence_gate_equals_primitives(cell, T, B, H, bias):
    p = problem(cell, T=T, B=B, H=H, bias=bias, seed=T * 10 + H + bias)
    compare(fused(p, GATES[cell](T, "full")), primitive_full(p))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("K", [None, 5, 50])
def test_untruncated_window_equals_full_and_primitives(cell, K):
    p = problem(cell, T=6, seed=40)
    window = fused(p, GATES[cell](6, "window", K))
    compare(window, fused(p, GATES[cell](6, "full")), tol=1e-13)
    compare(window, primitive_full(p))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_forward_leaves_inputs_alone_and_hands_out_copies(cell):
    p = problem(cell, T=5, B=2, seed=8)
    before = [a.copy() for a in (p["xin"], *p["state"], p["W"], p["b"])]
    gate = GATES[cell](5, "full")
    outputs, saved = gate.forward(p["xin"], *p["state"], p["W"], p["b"])
    gate.backward(saved, np.ones_like(outputs))
    for a, b in zip((p["xin"], *p["state"], p["W"], p["b"]), before):
        np.testing.assert_array_equal(a, b)
    assert outputs.shape == (10, p["H"]) and outputs.flags.c_contiguous
    assert len(gate.final) == len(CELLS[cell].state)
    np.testing.assert_array_equal(gate.final[0], outputs[-2:])
    for part in gate.final:  # copies: the final state does not keep the (T, B, .) buffers alive
        assert part.base is None and not np.shares_memory(part, outputs)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_no_steps_hand_back_the_initial_state(cell):
    p = problem(cell, T=0, B=2, seed=1)
    gate = GATES[cell](0, "full")
    outputs, _ = gate.forward(p["xin"], *p["state"], p["W"], p["b"])
    assert outputs.shape == (0, p["H"])
    for got, given in zip(gate.final, p["state"]):
        np.testing.assert_array_equal(got, given)
        assert not np.shares_memory(got, given)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_saturated_gates_stay_finite_without_warnings(cell):
    """Pre-activations of +-1e3 (an exp of them overflows float64 at 710): no warning, no NaN,
    the sigmoids at 0 and 1, the gradients finite."""
    p = problem(cell, T=4, B=2, seed=3)
    xin = p["xin"] * 1e3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="raise"):
            gate = GATES[cell](4, "full")
            outputs, saved = gate.forward(xin, *p["state"], p["W"], p["b"])
            grads = gate.backward(saved, np.ones_like(outputs))
    assert np.isfinite(outputs).all() and all(np.isfinite(g).all() for g in grads if g is not None)
    act = saved[3 if cell == "lstm" else 1]
    sig = act.reshape(4, 2, BLOCKS[cell], p["H"])[:, :, [0, 1, 3] if cell == "lstm" else [0, 1]]
    assert ((sig >= 0) & (sig <= 1)).all() and (sig == 0).any() and (sig == 1).any()


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_float32_stays_float32_and_agrees_with_float64(cell):
    p = problem(cell, T=7, B=3, H=6, seed=5)
    d = np.random.default_rng(6).standard_normal((7 * 3, 6))
    results = {}
    for dtype in (np.float64, np.float32):
        args = [p["xin"], *p["state"], p["W"], p["b"]]
        gate = GATES[cell](7, "full")
        outputs, saved = gate.forward(*(a.astype(dtype) for a in args))
        grads = gate.backward(saved, d.astype(dtype))
        assert outputs.dtype == dtype and all(g.dtype == dtype for g in grads)
        assert all(s.dtype == dtype for s in gate.final)
        results[dtype] = (outputs, *grads)
    for a, b in zip(results[np.float32], results[np.float64]):
        assert_close(a, b, tol=1e-5)


# ---------------------------------------------------------------- (b) finite differences


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("mode,truncate", [("full", None), ("window", None)])
@pytest.mark.parametrize("bias", [True, False])
def test_sequence_gate_finite_differences(cell, mode, truncate, bias):
    p = problem(cell, T=5, B=2, H=3, bias=bias, seed=21 + bias)
    inputs = [p["xin"], *p["state"], p["W"], p["b"]]
    diff = list(range(len(inputs) if bias else len(inputs) - 1))
    errors = check_gate(GATES[cell](5, mode, truncate), inputs, diff, seed=3)
    assert set(errors) == {f"input {i}" for i in diff}
    assert max(errors.values()) < 1e-8, errors


LAYOUTS = {
    "no embed, no bias, 1 layer": dict(embed_size=None, bias=False, num_layers=1),
    "embed + bias, 2 layers": dict(embed_size=4, bias=True, num_layers=2),
}
# (layout, bptt, truncate, masked): window BPTT is one layer's rule
MODEL_CASES = [(layout, bptt, K, masked) for layout in LAYOUTS for bptt, K in
               (("chunk", 3), ("chunk", 1), ("window", 2), ("window", 0))
               for masked in (False, True)
               if not (bptt == "window" and LAYOUTS[layout]["num_layers"] > 1) and not (K == 1 and masked)]


def fd_model(cell, layout, seed=0):
    model = LanguageModel(11, 5, cell=cell, dtype="float64", seed=seed, **LAYOUTS[layout])
    if model.config.embed_size:  # larger first-layer gradients, well above the differences' rounding
        model.params["encoder.weight"] *= 5
        model.params["decoder.weight"] *= 10
    return model


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("layout,bptt,truncate,masked", MODEL_CASES)
def test_model_truncated_gradients_finite_differences(cell, layout, bptt, truncate, masked):
    model = fd_model(cell, layout)
    errors = check_model(ModelCase(layout, model, bptt, truncate, masked), T=6, B=2, seed=7, max_entries=25)
    assert set(errors) == set(model.params)
    assert max(errors.values()) < 1e-6, errors


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_truncation_really_truncates_in_the_model(cell):
    """The truncated gradients differ from the full one, so the checks above can fail."""
    model = fd_model(cell, "no embed, no bias, 1 layer")
    gen = np.random.default_rng(1)
    ids = gen.integers(0, 11, (8, 2))
    full = model.loss_and_grads(ids, ids[::-1]).grads["rnn.weight_hh_l0"]
    for bptt, K in (("chunk", 3), ("window", 2)):
        part = model.loss_and_grads(ids, ids[::-1], bptt=bptt, truncate=K).grads["rnn.weight_hh_l0"]
        assert np.abs(part - full).max() > 1e-4 * np.abs(full).max(), bptt


# ---------------------------------------------------------------- (c) window: the tutorial's loop, literally


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def literal_forward(p):
    """One step at a time in plain numpy: per step the values its backward needs."""
    T, B, H = p["T"], p["B"], p["H"]
    W, b = p["W"], 0.0 if p["b"] is None else p["b"]
    state, steps = list(p["state"]), []
    for t in range(T):
        x, h = p["xin"][t * B:(t + 1) * B], state[0]
        if p["cell"] == "lstm":
            a = x + h @ W.T + b
            i, f, g, o = sigmoid(a[:, :H]), sigmoid(a[:, H:2 * H]), np.tanh(a[:, 2 * H:3 * H]), sigmoid(a[:, 3 * H:])
            c = f * state[1] + i * g
            steps.append(dict(prev=state, i=i, f=f, g=g, o=o, c=c, tc=np.tanh(c)))
            state = [o * np.tanh(c), c]
        else:
            q = h @ W.T + b
            r = sigmoid(x[:, :H] + q[:, :H])
            z = sigmoid(x[:, H:2 * H] + q[:, H:2 * H])
            n = np.tanh(x[:, 2 * H:] + r * q[:, 2 * H:])
            steps.append(dict(prev=state, r=r, z=z, n=n, q_n=q[:, 2 * H:]))
            state = [(1 - z) * n + z * h]
    return steps


def literal_step_backward(cell, s, W, d_state):
    """One step back: the gradient at this step's output state -> (d xin_t, d pre-activation of the
    hh-side (for W_hh, b_hh), the gradient at the previous state)."""
    if cell == "lstm":
        dh, dc = d_state
        do = dh * s["tc"]
        dc = dc + dh * s["o"] * (1 - s["tc"] ** 2)
        di, dg, df = dc * s["g"], dc * s["i"], dc * s["prev"][1]
        da = np.concatenate([di * s["i"] * (1 - s["i"]), df * s["f"] * (1 - s["f"]),
                             dg * (1 - s["g"] ** 2), do * s["o"] * (1 - s["o"])], axis=1)
        return da, da, [da @ W, dc * s["f"]]
    (dh,) = d_state
    r, z, n, h_prev = s["r"], s["z"], s["n"], s["prev"][0]
    dn_pre = dh * (1 - z) * (1 - n ** 2)
    dz_pre = dh * (h_prev - n) * z * (1 - z)
    dr_pre = dn_pre * s["q_n"] * r * (1 - r)
    dq = np.concatenate([dr_pre, dz_pre, dn_pre * r], axis=1)
    dx = np.concatenate([dr_pre, dz_pre, dn_pre], axis=1)
    return dx, dq, [dq @ W + dh * z]


def window_literal(p, d_outputs, K):
    """The tutorial's bptt loop: for each t, the loss at t goes back one step at a time through steps
    t, t-1, ..., max(0, t-K) (the state before them held constant, unless it is the initial state),
    and every step's gradients are summed."""
    T, B, cell = p["T"], p["B"], p["cell"]
    steps = literal_forward(p)
    dxin, dW = np.zeros_like(p["xin"]), np.zeros_like(p["W"])
    db = np.zeros(p["W"].shape[0])
    d_init = [np.zeros_like(s) for s in p["state"]]
    for t in range(T):
        lo = max(0, t - K)
        d_state = [d_outputs[t * B:(t + 1) * B]] + [np.zeros_like(s) for s in p["state"][1:]]
        for s in range(t, lo - 1, -1):
            dx, dq, d_state = literal_step_backward(cell, steps[s], p["W"], d_state)
            dxin[s * B:(s + 1) * B] += dx
            dW += dq.T @ steps[s]["prev"][0]
            db += dq.sum(axis=0)
        if lo == 0:  # the initial state is a parameter of the gate; a later one is a constant
            for acc, d in zip(d_init, d_state):
                acc += d
    return dxin, d_init, dW, None if p["b"] is None else db


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("T,K,bias", [(7, 0, True), (7, 1, True), (7, 2, False), (7, 3, True), (8, 5, True),
                                      (5, 4, False), (2, 1, True), (1, 0, True)])
def test_window_equals_the_literal_loop(cell, T, K, bias):
    p = problem(cell, T=T, B=3, bias=bias, seed=200 + 10 * T + K)
    d = np.random.default_rng(K).standard_normal((T * p["B"], p["H"]))
    gate = GATES[cell](T, "window", K)
    outputs, saved = gate.forward(p["xin"], *p["state"], p["W"], p["b"])
    got = gate.backward(saved, d)
    dxin, d_init, dW, db = window_literal(p, d, K)
    assert_close(got[0], dxin, 1e-10, "xin")
    for k, expected in enumerate(d_init):
        assert_close(got[1 + k], expected, 1e-10, f"initial state part {k}")
    assert_close(got[-2], dW, 1e-10, "W_hh")
    if bias:
        assert_close(got[-1], db, 1e-10, "b_hh")
    else:
        assert got[-1] is None
    if K < T - 1:  # a real truncation: differs from full BPTT
        full = GATES[cell](T, "full")
        full_grads = full.backward(full.forward(p["xin"], *p["state"], p["W"], p["b"])[1], d)
        assert np.abs(full_grads[-2] - got[-2]).max() > 1e-6


def test_the_literal_loop_untruncated_is_full_bptt():
    """The literal loop itself, with K = T - 1, reproduces full BPTT of the primitives (for both cells)."""
    for cell in ("lstm", "gru"):
        p = problem(cell, T=5, B=2, seed=9)
        gate = GATES[cell](5, "full")
        outputs, saved = gate.forward(p["xin"], *p["state"], p["W"], p["b"])
        d = np.random.default_rng(2).standard_normal(outputs.shape)
        got = gate.backward(saved, d)
        dxin, d_init, dW, db = window_literal(p, d, 4)
        for a, b in zip(got, [dxin, *d_init, dW, db]):
            assert_close(a, b, 1e-10)


# ---------------------------------------------------------------- chunk: full BPTT chunk by chunk


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("T,K,bias", [(7, 3, True), (6, 3, False), (6, 1, True), (6, 6, True), (4, 10, True)])
def test_chunk_equals_full_per_chunk_with_carried_state(cell, T, K, bias):
    p = problem(cell, T=T, B=2, bias=bias, seed=T + 7 * K)
    B = p["B"]
    d = np.random.default_rng(99).standard_normal((T * B, p["H"]))
    state, outputs, dxin = p["state"], [], []
    dW, db = np.zeros_like(p["W"]), None if p["b"] is None else np.zeros_like(p["b"])
    for lo in range(0, T, K):
        n = min(K, T - lo)
        rows = slice(lo * B, (lo + n) * B)
        gate = GATES[cell](n, "full")
        out, saved = gate.forward(p["xin"][rows], *state, p["W"], p["b"])
        grads = gate.backward(saved, d[rows])  # the initial state's gradients: cut, not passed back
        outputs.append(out.copy())
        dxin.append(grads[0])
        dW += grads[-2]
        if db is not None:
            db += grads[-1]
        state = gate.final  # carried forward, a constant for the next chunk
    gate = GATES[cell](T, "chunk", K)
    out, saved = gate.forward(p["xin"], *p["state"], p["W"], p["b"])
    got = gate.backward(saved, d)
    assert_close(out, np.concatenate(outputs), what="outputs")
    for a, b in zip(gate.final, state):
        assert_close(a, b, what="final")
    assert_close(got[0], np.concatenate(dxin), what="xin")
    assert_close(got[-2], dW, what="W_hh")
    if bias:
        assert_close(got[-1], db, what="b_hh")
    else:
        assert got[-1] is None
    for d_init in got[1:-2]:  # the initial state starts the first chunk: the gradient stops there
        np.testing.assert_array_equal(d_init, 0)


# ---------------------------------------------------------------- (d) the registry and the model


def test_registry_entries():
    lstm, gru = CELLS["lstm"], CELLS["gru"]
    assert (lstm.gates, lstm.state, lstm.sequence, lstm.bptt_modes) == (4, ("h", "c"), LSTMSequence, BPTT_MODES)
    assert (gru.gates, gru.state, gru.sequence, gru.bptt_modes) == (3, ("h",), GRUSequence, BPTT_MODES)
    assert "i, f, g, o" in lstm.summary and "r, z, n" in gru.summary


@pytest.mark.parametrize("cell,G", [("lstm", 4), ("gru", 3)])
def test_parameter_names_shapes_and_initialisation(cell, G):
    V, H, E = 50, 40, 6
    tutorial = LanguageModel(V, H, cell=cell, embed_size=None, bias=True, num_layers=2)
    shapes = {k: v.shape for k, v in tutorial.params.items()}
    assert shapes == {"encoder.weight": (V, G * H), "rnn.weight_hh_l0": (G * H, H), "rnn.bias_ih_l0": (G * H,),
                      "rnn.bias_hh_l0": (G * H,), "rnn.weight_ih_l1": (G * H, H), "rnn.weight_hh_l1": (G * H, H),
                      "rnn.bias_ih_l1": (G * H,), "rnn.bias_hh_l1": (G * H,), "decoder.weight": (V, H),
                      "decoder.bias": (V,)}
    embedded = LanguageModel(V, H, cell=cell, embed_size=E, bias=False)
    assert {k: v.shape for k, v in embedded.params.items()} == {
        "encoder.weight": (V, E), "rnn.weight_ih_l0": (G * H, E), "rnn.weight_hh_l0": (G * H, H),
        "decoder.weight": (V, H)}
    bound = 1 / np.sqrt(H)  # nn.LSTM's and nn.GRU's U(-1/sqrt(H), 1/sqrt(H)) for every rnn.* parameter
    for name, value in {**tutorial.params, **embedded.params}.items():
        if name.startswith("rnn."):
            assert np.abs(value).max() <= bound and np.abs(value).max() > 0.9 * bound, name


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_window_with_two_layers_is_refused(cell):
    model = LanguageModel(9, 3, cell=cell, num_layers=2, embed_size=2)
    ids = np.zeros((4, 2), dtype=int)
    with pytest.raises(ValueError, match="window BPTT"):
        model.loss_and_grads(ids, ids, bptt="window", truncate=2)


def random_hidden(model, B, seed):
    gen = np.random.default_rng(seed)
    c = model.config
    parts = tuple(gen.standard_normal((c.num_layers, B, c.hidden_size)) * 0.5 for _ in c.cell_type.state)
    return c.cell_type.hidden(parts)


def parts_of(hidden):
    return hidden if isinstance(hidden, tuple) else (hidden,)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_the_model_carries_the_cells_state(cell):
    model = LanguageModel(13, 6, cell=cell, embed_size=5, num_layers=2, dtype="float64", seed=2)
    zero = model.init_hidden(3)
    if cell == "lstm":
        assert isinstance(zero, tuple) and len(zero) == 2
    else:
        assert isinstance(zero, np.ndarray)
    for part in parts_of(zero):
        assert part.shape == (2, 3, 6) and part.dtype == np.float64 and not part.any()

    gen = np.random.default_rng(0)
    inputs, targets = gen.integers(0, 13, (8, 3)), gen.integers(0, 13, (8, 3))
    hidden = random_hidden(model, 3, seed=1)
    result = model.loss_and_grads(inputs, targets, hidden=hidden)
    nll, final = model.nll(inputs, targets, hidden=hidden)
    logp, final_lp = model.log_probs(inputs, hidden=hidden)
    assert type(result.hidden) is type(final) is type(final_lp) is type(zero)
    for a, b, c in zip(parts_of(result.hidden), parts_of(final), parts_of(final_lp)):
        assert a.shape == (2, 3, 6)
        np.testing.assert_allclose(a, b, rtol=1e-14)
        np.testing.assert_allclose(a, c, rtol=1e-14)
    assert result.loss == pytest.approx(nll.mean(), rel=1e-12)
    np.testing.assert_allclose(-logp.reshape(-1, 13)[np.arange(24), targets.reshape(-1)], nll.reshape(-1),
                               rtol=1e-12)
    # chunked evaluation with the state carried equals one pass
    pieces, h = [], hidden
    for lo, hi in ((0, 3), (3, 4), (4, 8)):
        piece, h = model.nll(inputs[lo:hi], targets[lo:hi], hidden=h)
        pieces.append(piece)
    np.testing.assert_allclose(np.concatenate(pieces), nll, rtol=1e-12)
    for a, b in zip(parts_of(h), parts_of(final)):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    # so does step-by-step generation
    h = hidden
    for t in range(8):
        lp, h = model.step(inputs[t], h)
        np.testing.assert_allclose(lp, logp[t], rtol=1e-12)
    # training in chunks carries the same state forward; so does evaluate
    chunked = model.loss_and_grads(inputs, targets, hidden=hidden, bptt="chunk", truncate=3)
    assert chunked.loss == pytest.approx(result.loss, rel=1e-13)
    for a, b in zip(parts_of(chunked.hidden), parts_of(final)):
        np.testing.assert_allclose(a, b, rtol=1e-13)
    total, count, _ = model.evaluate(inputs, targets, hidden=hidden)
    assert count == 24 and total == pytest.approx(nll.sum(), rel=1e-12)


def test_the_lstm_cell_state_reaches_the_next_call():
    """c is carried: the same h with c zeroed gives another next chunk."""
    model = LanguageModel(13, 6, cell="lstm", embed_size=5, dtype="float64", seed=3)
    gen = np.random.default_rng(4)
    inputs = gen.integers(0, 13, (6, 2))
    _, (h, c) = model.nll(inputs[:3], inputs[:3], hidden=random_hidden(model, 2, 5))
    with_c, _ = model.nll(inputs[3:], inputs[3:], hidden=(h, c))
    without_c, _ = model.nll(inputs[3:], inputs[3:], hidden=(h, np.zeros_like(c)))
    assert np.abs(with_c - without_c).max() > 1e-3
    with pytest.raises(ValueError, match="carries 2 state arrays"):
        model.nll(inputs, inputs, hidden=h)
    with pytest.raises(ValueError, match="state c must be shaped"):
        model.nll(inputs, inputs, hidden=(h, c[:, :1]))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("embed_size", [None, 4])
def test_fused_sgd_step_equals_gradients_then_update(cell, embed_size):
    model = LanguageModel(17, 5, cell=cell, embed_size=embed_size, dtype="float64", seed=6)
    twin = LanguageModel.from_config(model.config, {k: v.copy() for k, v in model.params.items()})
    gen = np.random.default_rng(7)
    inputs, targets = gen.integers(0, 17, (6, 3)), gen.integers(0, 17, (6, 3))
    mask = (gen.random((6, 3)) < 0.7).astype(float)
    hidden = random_hidden(model, 3, 8)
    loss, final = model.sgd_step(inputs, targets, 0.5, mask=mask, hidden=hidden, bptt="chunk", truncate=4)
    result = twin.loss_and_grads(inputs, targets, mask=mask, hidden=hidden, bptt="chunk", truncate=4)
    assert loss == pytest.approx(result.loss, rel=1e-13)
    for name, value in twin.params.items():
        np.testing.assert_allclose(model.params[name], value - 0.5 * result.grads[name], rtol=1e-12, atol=1e-14)
    for a, b in zip(parts_of(final), parts_of(result.hidden)):
        np.testing.assert_allclose(a, b, rtol=1e-13)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_float32_model_trains_in_float32(cell):
    model = LanguageModel(17, 5, cell=cell, embed_size=None, dtype="float32", seed=6)
    twin = LanguageModel.from_config({**model.config.to_dict(), "dtype": "float64"},
                                     {k: v.astype(np.float64) for k, v in model.params.items()})
    gen = np.random.default_rng(9)
    inputs, targets = gen.integers(0, 17, (7, 2)), gen.integers(0, 17, (7, 2))
    r32 = model.loss_and_grads(inputs, targets, bptt="window", truncate=3)
    r64 = twin.loss_and_grads(inputs, targets, bptt="window", truncate=3)
    assert r32.loss == pytest.approx(r64.loss, rel=1e-5)
    for name, g in r32.grads.items():
        assert g.dtype == np.float32, name
        assert_close(g, r64.grads[name], tol=1e-4, what=name)
    for part in parts_of(r32.hidden):
        assert part.dtype == np.float32
