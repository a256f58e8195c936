"""The output layer: decoder projection, softmax and cross-entropy, fused.

This is where a word-level language model spends its time: three
(N, H) x (H, V) sized matrix products per batch (logits, the decoder's
gradient, the hidden gradient). Everything else touches the (N, V) logits
once: a pass that adds the bias and exponentiates a block of rows at a time
while the block is in cache (in parallel threads), and the backward needs no
(N, V) pass of its own (see ``LinearSoftmaxCE``). No second (N, V) array exists.
"""
from __future__ import annotations

from .backend import empty, parallel_ranges, take, xp
from .gates import Gate, add_rows

BLOCK_BYTES = 1 << 20  # rows of logits processed together: about 1 MiB


def _block_rows(vocab_size, itemsize):
    return max(1, BLOCK_BYTES // (vocab_size * itemsize))


def _exp_block(z, targets, bias, shift):
    """In place on a block of logits z (n, V): add the bias, (shift), exponentiate.

    Returns (row sums of exp (n,), target logit after the shift (n,)), so that
    -log p(target) = log(first) - second. ``z`` is left holding exp(z - shift).
    """
    if bias is not None:
        z += bias
    if shift:
        z -= z.max(axis=1, keepdims=True)
    picked = z[xp.arange(len(z)), targets] if targets is not None else None
    xp.exp(z, out=z)
    return z.sum(axis=1), picked


def _softmax_terms(exps, hidden, weight, bias, targets, lo, hi):
    """Rows lo:hi of the logits buffer ``exps`` (N, V) -> exp in place; returns (sums, picked).

    Softmax needs no shift by the row max while exp neither overflows nor
    underflows, which is the usual case (tanh states, small weights); the
    (N, V) pass that finds maxima is then skipped. Rows where it does are
    detected from their sums and recomputed with the shift.
    """
    with xp.errstate(over="ignore", under="ignore"):  # detected below; thread-local
        sums, picked = _exp_block(exps[lo:hi], targets[lo:hi], bias, shift=False)
    info = xp.finfo(exps.dtype)
    bad = xp.flatnonzero(~(xp.isfinite(sums) & (sums > info.tiny / info.eps)))
    if bad.size:
        rows = bad + lo
        redo = hidden[rows] @ weight.T
        sums[bad], picked[bad] = _exp_block(redo, targets[rows], bias, shift=True)
        exps[rows] = redo
    return sums, picked


def _exp_logits(exps, hidden, weight, bias, targets):
    """exps (N, V) holds logits without bias; in place to exp(logits), a block of rows at a time.

    Blocks are shared among threads. Returns (row sums of exp (N,), target logit (N,)).
    """
    N, V = exps.shape
    sums = empty(N, dtype=exps.dtype)
    picked = empty(N, dtype=exps.dtype)
    step = _block_rows(V, exps.itemsize)

    def rows(start, stop):
        for lo in range(start, stop, step):
            hi = min(lo + step, stop)
            sums[lo:hi], picked[lo:hi] = _softmax_terms(exps, hidden, weight, bias, targets, lo, hi)

    parallel_ranges(rows, N)
    return sums, picked


class LinearSoftmaxCE(Gate):
    """hidden (N, H), weight (V, H), bias (V,) or None, targets (N,), weights (N,) -> loss.

    ``loss = sum_i weights[i] * -log softmax(hidden[i] W^T + b)[targets[i]]``.
    Equal to MatMul -> BiasAdd -> SoftmaxCE of ``gates.py`` (checked in the tests).

    The gradient of the logits is ``dz = c * e - scale * onehot(targets)``
    with ``e = exp(z)``, ``c = scale / sum(e)`` per row, ``scale = weights * dloss``.
    Its per-row factor moves onto the small (N, H) side of each product and
    the one-hot part becomes a row gather / scatter, so the backward is the
    two (N, V)-sized matrix products on ``e`` and nothing else of size N x V.
    """

    def forward(self, hidden, weight, bias, targets, weights):
        N, V = hidden.shape[0], weight.shape[0]
        exps = xp.matmul(hidden, weight.T, out=take((N, V), hidden.dtype))
        sums, picked = _exp_logits(exps, hidden, weight, bias, targets)
        nll = xp.log(sums) - picked
        loss = float((weights * nll).sum(dtype=xp.float64))
        return loss, (hidden, weight, bias is not None, targets, weights, exps, sums)

    def backward(self, saved, dloss):
        hidden, weight, has_bias, targets, weights, exps, sums = saved
        scale = (weights * dloss).astype(exps.dtype, copy=False)  # (N,)
        c = scale / sums  # (N,)
        d_hidden = exps @ weight  # (N, H)
        d_hidden *= c[:, None]
        d_hidden -= scale[:, None] * weight[targets]
        d_weight = exps.T @ (hidden * c[:, None])  # (V, H)
        add_rows(d_weight, targets, hidden * -scale[:, None])
        d_bias = None
        if has_bias:
            d_bias = c @ exps
            d_bias -= xp.bincount(targets, weights=scale, minlength=len(d_bias)).astype(d_bias.dtype)
        return d_hidden, d_weight, d_bias, None, None


def nll_rows(hidden, weight, bias, targets, max_rows=1024):
    """Forward only: -log p(target) for each row, (N,).

    Logits are made ``max_rows`` rows at a time in one reused buffer, so memory
    stays at one block of logits whatever N is.
    """
    N, V = hidden.shape[0], weight.shape[0]
    nll = empty(N, dtype=hidden.dtype)
    buffer = take((min(N, max_rows), V), hidden.dtype)
    for lo in range(0, N, max_rows):
        hi = min(lo + max_rows, N)
        exps = xp.matmul(hidden[lo:hi], weight.T, out=buffer[: hi - lo])
        sums, picked = _exp_logits(exps, hidden[lo:hi], weight, bias, targets[lo:hi])
        nll[lo:hi] = xp.log(sums) - picked
    return nll


def log_probs(hidden, weight, bias):
    """Log-softmax of the decoder's logits: hidden (N, H) -> (N, V)."""
    z = hidden @ weight.T
    if bias is not None:
        z += bias
    z -= z.max(axis=1, keepdims=True)
    z -= xp.log(xp.exp(z).sum(axis=1, keepdims=True))
    return z
