"""The tape: gradients of shared parameters are summed over their uses; nothing else is touched."""
import numpy as np
import pytest

from rnnlab.gates import Add, BiasAdd, Gate, MatMul, Mul, SoftmaxCE, Tanh
from rnnlab.gradcheck import check_function
from rnnlab.graph import Node, Tape

T, B, H, V = 4, 3, 5, 6


def make_values(seed=0):
    gen = np.random.default_rng(seed)
    return dict(
        W=gen.standard_normal((H, H)) * 0.5,
        b=gen.standard_normal(H),
        D=gen.standard_normal((V, H)),
        xs=gen.standard_normal((T, B, H)),
        h0=gen.standard_normal((B, H)),
        targets=gen.integers(0, V, (T, B)),
        weights=gen.random(T * B) / (T * B),
    )


def unrolled(tape, W, b, D, v, separate_w=None):
    """h_t = tanh(x_t + h_{t-1} W^T + b), loss = sum_t SoftmaxCE(h_t D^T).

    ``separate_w``: a list of T nodes to use at each step instead of the shared W.
    """
    h = tape.constant(v["h0"], "h0")
    loss = None
    for t in range(T):
        w_t = W if separate_w is None else separate_w[t]
        pre = tape.apply(Add(), tape.constant(v["xs"][t]), tape.apply(MatMul(), h, w_t))
        h = tape.apply(Tanh(), tape.apply(BiasAdd(), pre, b))
        logits = tape.apply(MatMul(), h, D)
        step = tape.apply(SoftmaxCE(), logits, v["targets"][t], v["weights"][t * B:(t + 1) * B])
        loss = step if loss is None else tape.apply(Add(), loss, step)
    return loss


def forward_loss(v):
    tape = Tape()
    return float(unrolled(tape, tape.param(v["W"]), tape.param(v["b"]), tape.param(v["D"]), v).value)


def test_shared_parameter_gets_sum_of_per_use_gradients():
    v = make_values()
    tape = Tape()
    W, b, D = tape.param(v["W"], "W"), tape.param(v["b"], "b"), tape.param(v["D"], "D")
    tape.backward(unrolled(tape, W, b, D, v))

    # The same graph with a separate copy of W at every step: one gradient per use.
    tape2 = Tape()
    copies = [tape2.param(v["W"].copy(), f"W{t}") for t in range(T)]
    b2, D2 = tape2.param(v["b"]), tape2.param(v["D"])
    tape2.backward(unrolled(tape2, None, b2, D2, v, separate_w=copies))
    per_use = [c.grad for c in copies]
    for g in per_use:
        assert g is not None and np.abs(g).max() > 0  # every use contributes
    assert not np.allclose(per_use[0], per_use[-1])
    np.testing.assert_allclose(W.grad, sum(per_use), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(b.grad, b2.grad, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(D.grad, D2.grad, rtol=1e-13, atol=1e-15)

    # And the sum is the true gradient: finite differences of the loss.
    errors = check_function(lambda: forward_loss(v), {"W": v["W"], "b": v["b"], "D": v["D"]},
                            {"W": W.grad, "b": b.grad, "D": D.grad})
    for name, err in errors.items():
        assert err < 1e-8, (name, err)


def test_constants_get_no_gradient_and_records_are_cleared():
    v = make_values(1)
    tape = Tape()
    W, b, D = tape.param(v["W"]), tape.param(v["b"]), tape.param(v["D"])
    x_const = tape.constant(v["xs"][0], "x")
    h = tape.apply(Tanh(), tape.apply(MatMul(), x_const, W))  # x is a constant input of a recorded gate
    loss = tape.apply(SoftmaxCE(), tape.apply(MatMul(), h, D), v["targets"][0], np.ones(B))
    # Only gates with a differentiable input are recorded.
    only_constants = tape.apply(Tanh(), x_const)
    assert not only_constants.requires_grad
    assert len(tape.records) == 4
    tape.backward(loss)
    assert x_const.grad is None and only_constants.grad is None
    assert W.grad is not None and D.grad is not None
    assert b.grad is None  # a parameter not used at all
    assert tape.records == []
    assert x_const.requires_grad is False and W.requires_grad is True


def test_plain_arrays_are_constants():
    tape = Tape()
    w = tape.param(np.eye(2) * 2.0)
    x = np.array([[1.0, -1.0]])
    y = tape.apply(MatMul(), x, w)
    loss = tape.apply(SoftmaxCE(), y, np.array([0]), np.array([1.0]))
    assert len(tape.records) == 2
    tape.backward(loss)
    assert tape.records == []
    z = x @ (np.eye(2) * 2.0).T
    p = np.exp(z) / np.exp(z).sum()
    dz = p - np.array([[1.0, 0.0]])
    np.testing.assert_allclose(w.grad, dz.T @ x, rtol=1e-14)
    np.testing.assert_array_equal(x, [[1.0, -1.0]])


def test_nodes_not_reaching_the_loss_are_untouched():
    v = make_values(2)
    tape = Tape()
    W, D, E = tape.param(v["W"]), tape.param(v["D"]), tape.param(np.ones((V, H)))
    h = tape.apply(Tanh(), tape.apply(MatMul(), v["xs"][0], W))
    side = tape.apply(MatMul(), h, E)  # uses h and E but does not feed the loss
    side2 = tape.apply(Tanh(), side)
    loss = tape.apply(SoftmaxCE(), tape.apply(MatMul(), h, D), v["targets"][0], np.ones(B))
    tape.backward(loss)
    assert E.grad is None and side.grad is None and side2.grad is None
    # h's gradient is only the loss's: the dead branch added nothing.
    tape_ref = Tape()
    W2, D2 = tape_ref.param(v["W"]), tape_ref.param(v["D"])
    h2 = tape_ref.apply(Tanh(), tape_ref.apply(MatMul(), v["xs"][0], W2))
    loss2 = tape_ref.apply(SoftmaxCE(), tape_ref.apply(MatMul(), h2, D2), v["targets"][0], np.ones(B))
    tape_ref.backward(loss2)
    np.testing.assert_array_equal(h.grad, h2.grad)
    np.testing.assert_array_equal(W.grad, W2.grad)


def test_same_node_twice_in_one_gate():
    """Mul(a, a): both input slots feed the same node, so its gradient is 2 a dy."""
    a_val = np.array([[1.0, -2.0, 3.0]])
    tape = Tape()
    a = tape.param(a_val.copy())
    sq = tape.apply(Mul(), a, a)
    loss = tape.apply(SoftmaxCE(), sq, np.array([1]), np.array([1.0]))
    tape.backward(loss)
    z = a_val * a_val
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    dz = p - np.eye(3)[[1]]
    np.testing.assert_allclose(a.grad, 2 * a_val * dz, rtol=1e-14)


def test_backward_seed_scales_every_gradient():
    v = make_values(3)
    grads = []
    for seed in (1.0, 2.5):
        tape = Tape()
        W, b, D = tape.param(v["W"]), tape.param(v["b"]), tape.param(v["D"])
        tape.backward(unrolled(tape, W, b, D, v), seed=seed)
        grads.append((W.grad, b.grad, D.grad))
    for g1, g2 in zip(*grads):
        np.testing.assert_allclose(g2, 2.5 * g1, rtol=1e-14)


def test_gradients_do_not_alias_between_nodes():
    """Add hands the same dy to both inputs; later accumulation must not mutate either in place."""
    tape = Tape()
    a = tape.param(np.array([[1.0, 2.0]]))
    b = tape.param(np.array([[3.0, 4.0]]))
    s = tape.apply(Add(), a, b)
    t = tape.apply(Add(), s, a)  # a is used twice: its gradient is accumulated
    loss = tape.apply(SoftmaxCE(), t, np.array([0]), np.array([1.0]))
    tape.backward(loss)
    np.testing.assert_allclose(a.grad, 2 * b.grad, rtol=1e-15)


def test_node_repr_and_defaults():
    n = Node(np.zeros((2, 3)), name="w")
    assert n.grad is None and n.requires_grad
    assert "w" in repr(n) and "(2, 3)" in repr(n)
    with pytest.raises(NotImplementedError):
        Gate().forward()
    with pytest.raises(NotImplementedError):
        Gate().backward(None, None)
