"""Primitive gates: the table of forward/backward pairs.

Every gate is a pair of plain methods that sit side by side:

* ``forward(*inputs) -> (output, saved)`` computes the output and returns
  whatever its backward needs (usually the inputs and the output);
* ``backward(saved, d_output) -> tuple`` returns one gradient per input, in
  the order of the inputs, ``None`` for inputs that are not differentiable
  (token ids, targets, weights).

Batches are rows: an activation is ``(N, features)`` where ``N`` is the
number of (time, batch) positions, and a weight is ``(out, in)`` as in
PyTorch, so the tutorial's ``W . x`` becomes ``x @ W.T`` over all rows at
once. One sentence is simply ``N = T``.

| gate            | forward                 | backward                                   |
|-----------------|-------------------------|--------------------------------------------|
| MatMul          | y = x W^T               | dx = dy W,  dW = dy^T x                    |
| Add             | y = a + b               | da = dy,  db = dy                          |
| BiasAdd         | y = x + b               | dx = dy,  db = sum_rows dy                 |
| Mul             | y = a * b               | da = dy * b,  db = dy * a                  |
| Tanh            | y = tanh x              | dx = (1 - y^2) dy                          |
| Sigmoid         | y = 1 / (1 + e^-x)      | dx = y (1 - y) dy                          |
| Relu            | y = max(x, 0)           | dx = dy [x > 0]                            |
| Dropout         | y = x * mask            | dx = dy * mask                             |
| Embedding       | y = E[ids]              | dE = scatter-add of dy rows at ids         |
| SoftmaxCE       | l = sum_i w_i (-log p_i[t_i]) | dz = w (p - onehot(t)) dl            |
"""
from __future__ import annotations

from .backend import empty, xp, zeros
from .threads import matmul_by_rows


class Gate:
    """An operation with a forward and a backward (see the module table)."""

    def forward(self, *inputs):
        raise NotImplementedError

    def backward(self, saved, d_output):
        raise NotImplementedError

    def __repr__(self):
        return type(self).__name__ + "()"


class MatMul(Gate):
    """The tutorial's multiply gate over rows: x (N, I), W (O, I) -> (N, O).

    Products as large as a chunk's input projection are split among rnnlab's
    threads (``threads.matmul_by_rows``)."""

    def forward(self, x, weight):
        return matmul_by_rows(x, weight.T), (x, weight)

    def backward(self, saved, dy):
        x, weight = saved
        return matmul_by_rows(dy, weight), matmul_by_rows(dy.T, x)


class Add(Gate):
    """a + b, both of the same shape."""

    def forward(self, a, b):
        return a + b, None

    def backward(self, saved, dy):
        return dy, dy


class BiasAdd(Gate):
    """x (N, O) + b (O,): the bias is shared by every row, so its gradient sums them."""

    def forward(self, x, bias):
        return x + bias, None

    def backward(self, saved, dy):
        return dy, dy.sum(axis=0)


class Mul(Gate):
    """Elementwise product a * b (the gating of GRU and LSTM cells)."""

    def forward(self, a, b):
        return a * b, (a, b)

    def backward(self, saved, dy):
        a, b = saved
        return dy * b, dy * a


class Tanh(Gate):
    def forward(self, x):
        y = xp.tanh(x)
        return y, y

    def backward(self, y, dy):
        return ((1.0 - y * y) * dy,)


class Sigmoid(Gate):
    def forward(self, x):
        # exp of a non-positive number never overflows: split by sign.
        e = xp.exp(-xp.abs(x))
        y = xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)
        return y, y

    def backward(self, y, dy):
        return (y * (1.0 - y) * dy,)


class Relu(Gate):
    def forward(self, x):
        return xp.maximum(x, 0), x

    def backward(self, x, dy):
        return (dy * (x > 0),)


class Dropout(Gate):
    """Inverted dropout with a given mask: x (N, D), mask (N, D) of 0 and 1 / (1 - p) -> x * mask.

    The mask is an input, drawn by the caller (``dropout_mask``), so that the
    same generator gives the same masks: a resumed run stays bit-identical.
    """

    def forward(self, x, mask):
        return x * mask, mask

    def backward(self, mask, dy):
        return dy * mask, None


def dropout_mask(gen, shape, p, dtype):
    """Keep each entry with probability 1 - p, scaled by 1 / (1 - p) (inverted dropout): (shape) array."""
    keep = gen.random(shape) >= p
    return keep.astype(dtype) * dtype.type(1.0 / (1.0 - p))


def sum_rows(ids, rows) -> tuple:
    """(distinct ids (R,), their rows summed (R, D)) from ids (N,) and rows (N, D): a gather's
    adjoint at the rows it touches.

    When every id occurs once these are ``ids`` and ``rows`` themselves.
    Otherwise rows of the same id are summed with one stable sort and
    ``np.add.reduceat``, rather than a one-hot matrix product or ``np.add.at``.
    """
    order = xp.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    first = empty(ids.shape, dtype=bool)  # where a run of equal ids starts
    if ids.size:
        first[0] = True
        xp.not_equal(sorted_ids[1:], sorted_ids[:-1], out=first[1:])
    if first.all():  # every id once
        return ids, rows
    starts = xp.flatnonzero(first)
    return sorted_ids[starts], xp.add.reduceat(rows[order], starts, axis=0)


def add_rows(out, ids, rows):
    """out[ids[i]] += rows[i] for every i, in place; out (V, D), ids (N,), rows (N, D).

    One fancy-index add of the rows summed per distinct id (``sum_rows``).
    """
    distinct, summed = sum_rows(ids, rows)
    out[distinct] += summed
    return out


def scatter_rows(ids, rows, num_rows):
    """The embedding's backward (a gather's adjoint): rows (N, D) summed into (num_rows, D) at ids."""
    return add_rows(zeros((num_rows, rows.shape[1]), dtype=rows.dtype), ids, rows)


class Embedding(Gate):
    """Lookup: E (V, D), ids (N,) -> E[ids] (N, D); the ids get no gradient."""

    def forward(self, table, ids):
        return table[ids], (ids, table.shape[0])

    def backward(self, saved, dy):
        ids, num_rows = saved
        return scatter_rows(ids, dy, num_rows), None


def log_softmax(z):
    """Row-wise log-softmax of z (N, V), numerically stable."""
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))


class SoftmaxCE(Gate):
    """Softmax with cross-entropy: logits (N, V), targets (N,), weights (N,) -> scalar.

    The loss is ``sum_i weights[i] * -log softmax(logits[i])[targets[i]]``;
    weights carry both the padding mask and the 1/count of a mean.
    """

    def forward(self, logits, targets, weights):
        logp = log_softmax(logits)
        rows = xp.arange(len(targets))
        loss = -(weights * logp[rows, targets]).sum()
        return loss, (logp, targets, weights)

    def backward(self, saved, dloss):
        logp, targets, weights = saved
        dz = xp.exp(logp)
        dz[xp.arange(len(targets)), targets] -= 1.0
        dz *= (weights * dloss)[:, None]
        return dz, None, None


PRIMITIVES = (MatMul, Add, BiasAdd, Mul, Tanh, Sigmoid, Relu, Dropout, Embedding, SoftmaxCE)
