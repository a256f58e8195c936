"""The clipped SGD step on gradients kept sparse where they are zero outside some rows.

``LanguageModel.clipped_sgd_step`` must take exactly the step of dense
gradients, ``optim.clip_grad_norm`` and ``optim.SGD``, for every output
layer, tied or not, with masks and the trainer's gradient scale; the sparse
forms must hold the same numbers as the dense gradients they stand for.
"""
from __future__ import annotations

import numpy as np
import pytest

from rnnlab.gates import add_rows, sum_rows
from rnnlab.graph import Tape
from rnnlab.model import LanguageModel
from rnnlab.optim import SGD, clip_grad_norm, grad_norm
from rnnlab.row_grads import RowRanges, RowsAt, clipped_sgd_step, dense
from rnnlab.two_level import Layout, TwoLevelSoftmaxCE

V, H = 60, 7
LAYERS = {"full": (), "class": (3, 9, 20, 41), "adaptive": (10, 30)}


def model(softmax, tied, dtype="float64", cell="lstm", layers=1):
    return LanguageModel(V, H, embed_size=H, cell=cell, num_layers=layers, softmax=softmax, cutoffs=LAYERS[softmax],
                         tied=tied, div_value=2.0, dtype=dtype, seed=4)


def batch(gen, T=6, B=3):
    """Inputs with repeated ids (their encoder rows must add up) and targets across the layers' clusters."""
    inputs = gen.integers(0, 8, (T, B))
    targets = gen.integers(0, V, (T, B))
    return inputs, targets


def max_diff(a, b):
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


CASES = [("full", False), ("full", True), ("class", False), ("class", True), ("adaptive", False)]


@pytest.mark.parametrize("softmax,tied", CASES, ids=[f"{s}{'-tied' if t else ''}" for s, t in CASES])
@pytest.mark.parametrize("clip", [0.05, 0.0, 1e9], ids=["clipping", "no-clip", "loose"])
@pytest.mark.parametrize("mode", ["stream", "sentences"])
def test_clipped_step_is_clip_grad_norm_then_sgd(softmax, tied, clip, mode):
    """Four steps of clipped_sgd_step == loss_and_grads, the scale, clip_grad_norm and SGD, float64:
    stream chunks with the state carried, or masked sentences with the loss summed and scaled by 1/B
    as the trainer does; the norms before clipping agree too."""
    gen = np.random.default_rng(1)
    sparse, plain = model(softmax, tied), model(softmax, tied)
    optimizer = SGD(plain.params, 0.7)
    carried_s = carried_p = None
    for _ in range(4):
        inputs, targets = batch(gen)
        if mode == "stream":
            kw, scale = dict(bptt="chunk", truncate=3), 1.0
        else:
            mask = (np.arange(6)[:, None] < gen.integers(2, 7, 3)[None, :]).astype(np.float64)
            kw, scale = dict(bptt="window", truncate=3, mask=mask, reduction="sum"), 1 / 3
        step = sparse.clipped_sgd_step(inputs, targets, 0.7, clip, grad_scale=scale,
                                       hidden=carried_s if mode == "stream" else None, **kw)
        loss, grads, final = plain.loss_and_grads(inputs, targets, hidden=carried_p if mode == "stream" else None, **kw)
        for g in grads.values():
            g *= scale
        norm = clip_grad_norm(grads, clip) if clip else grad_norm(grads)
        optimizer.step(grads)
        assert step.loss == pytest.approx(loss, rel=1e-13)
        assert step.norm == pytest.approx(norm, rel=1e-12)
        if mode == "stream":
            carried_s, carried_p = step.hidden, final
            assert all(np.abs(s - p).max() < 1e-12 for s, p in zip(carried_s, carried_p))
    assert max_diff(sparse.params, plain.params) < 1e-12
    assert max_diff(plain.params, model(softmax, tied).params) > 1e-3  # the steps moved the weights


@pytest.mark.parametrize("cell", ["rnn", "gru"])
def test_clipped_step_with_other_cells_and_layers(cell):
    """Two layers of the tanh RNN or the GRU, the class layer, full BPTT: as clip_grad_norm then SGD."""
    gen = np.random.default_rng(2)
    sparse, plain = model("class", False, cell=cell, layers=2), model("class", False, cell=cell, layers=2)
    for _ in range(3):
        inputs, targets = batch(gen)
        sparse.clipped_sgd_step(inputs, targets, 0.7, 0.05)
        grads = plain.loss_and_grads(inputs, targets).grads
        clip_grad_norm(grads, 0.05)
        SGD(plain.params, 0.7).step(grads)
    assert max_diff(sparse.params, plain.params) < 1e-12


def test_clipping_binds_in_the_tests_above():
    """The clip of 0.05 does scale those gradients (else the clipping cases would test nothing)."""
    m = model("class", False)
    inputs, targets = batch(np.random.default_rng(1))
    assert grad_norm(m.loss_and_grads(inputs, targets).grads) > 0.2


def test_clipped_step_moves_no_encoder_row_outside_the_batch():
    """Rows of the encoder for tokens not in the batch's inputs stay as they were, bit for bit; a
    row in the inputs moves."""
    m = model("class", False, dtype="float32")
    before = m.params["encoder.weight"].copy()
    inputs, targets = batch(np.random.default_rng(2))
    m.clipped_sgd_step(inputs, targets, 1.0, 0.25)
    moved = np.flatnonzero(np.any(m.params["encoder.weight"] != before, axis=1))
    assert set(moved) == set(np.unique(inputs))


def test_the_class_layers_sparse_gradient_is_its_dense_gradient():
    """TwoLevelSoftmaxCE(sparse=True) gives RowRanges holding exactly the dense gradients of the word
    table and bias (merged blocks, masked rows and clusters of one word included), the rest
    unchanged; ranges disjoint."""
    gen = np.random.default_rng(3)
    layout = Layout((0, 2, 3, 9, 20, 41, V), projected=False)
    N = 40
    hidden = gen.normal(size=(N, H))
    head_w, head_b = gen.normal(size=(6, H)), gen.normal(size=6)
    weight, bias = gen.normal(size=(V, H)), gen.normal(size=V)
    targets = gen.choice(np.r_[0:20, 41:V], N)  # the cluster 20:41 has no target
    weights = gen.uniform(0.5, 1.5, N) * (gen.random(N) > 0.2)

    def run(sparse):
        tape = Tape()
        params = [tape.param(a) for a in (hidden, head_w, head_b, weight, bias)]
        loss = tape.apply(TwoLevelSoftmaxCE(layout, sparse=sparse), *params[:3], tape.constant(targets),
                          tape.constant(weights), *params[3:])
        tape.backward(loss, 0.5)
        return loss.value, [n.grad for n in params]

    loss_d, grads_d = run(False)
    loss_s, grads_s = run(True)
    assert loss_s == loss_d
    assert isinstance(grads_s[-2], RowRanges) and isinstance(grads_s[-1], RowRanges)
    for gd, gs in zip(grads_d, grads_s):
        assert np.array_equal(dense(gs), gd)
    ranges = sorted((lo, lo + len(b)) for lo, b in zip(grads_s[-2].starts, grads_s[-2].blocks))
    assert all(a[1] <= b[0] for a, b in zip(ranges[:-1], ranges[1:]))
    assert sum(b - a for a, b in ranges) < V  # some class had no target: its rows are not formed


def test_sparse_forms_norm_scale_and_step_as_their_dense_arrays():
    gen = np.random.default_rng(5)
    at = RowsAt((9, 3), np.array([7, 1, 4]), gen.normal(size=(3, 3)))
    ranges = RowRanges((9,), np.float64, [0, 5], [gen.normal(size=2), gen.normal(size=3)])
    for g in (at, ranges):
        d = g.dense()
        assert g.norm() == pytest.approx(np.linalg.norm(d), rel=1e-14)
        assert np.array_equal((g * 2.5).dense(), d * 2.5)
        param = gen.normal(size=g.shape)
        expected = param - 0.3 * d
        g.subtract_from(param, 0.3)
        assert np.allclose(param, expected, rtol=0, atol=1e-15)
        g.scale(-2.0)
        assert np.array_equal(g.dense(), -2.0 * d)
    grads = {"a": at, "b": ranges, "c": gen.normal(size=(2, 2))}
    dense_grads = {k: dense(g).copy() for k, g in grads.items()}
    assert grad_norm(grads) == pytest.approx(grad_norm(dense_grads), rel=1e-14)
    params = {k: gen.normal(size=g.shape) for k, g in dense_grads.items()}
    expected = {k: p.copy() for k, p in params.items()}
    norm = clip_grad_norm(dense_grads, 0.1)
    SGD(expected, 2.0).step(dense_grads)
    assert clipped_sgd_step(params, grads, 2.0, 0.1) == pytest.approx(norm, rel=1e-14)
    assert max_diff(params, expected) < 1e-14


def test_sum_rows_adds_the_rows_of_repeated_ids():
    ids = np.array([4, 1, 4, 0, 1, 4])
    rows = np.arange(12.0).reshape(6, 2)
    distinct, summed = sum_rows(ids, rows)
    assert list(distinct) == [0, 1, 4]
    assert np.array_equal(summed, [[6, 7], [2 + 8, 3 + 9], [0 + 4 + 10, 1 + 5 + 11]])
    out = np.zeros((5, 2))
    assert np.array_equal(add_rows(out, ids, rows)[[0, 1, 4]], summed)
    once = np.array([3, 0])
    assert sum_rows(once, rows[:2])[0] is once
