"""The output layer: decoder projection, softmax and cross-entropy, fused.

This is where a word-level language model spends its time: three
(N, H) x (H, V) sized matrix products per batch (logits, the decoder's
gradient, the hidden gradient). Everything else is arranged around them:

* the vocabulary is split into parts, one per rnnlab thread
  (``backend.run_parallel``); a thread makes its part of the logits a block
  of rows at a time and exponentiates the block while it is in cache;
* softmax needs no shift by the row maximum while exp neither overflows nor
  underflows (tanh states, ordinary weights); rows where it does are found
  from their sums and redone with the shift;
* the backward needs no (N, V) pass of its own (see ``LinearSoftmaxCE``);
* the (N, V) buffers come from ``backend.take`` and are reused once free.
"""
from __future__ import annotations

from .backend import empty, parallel_parts, run_parallel, take, xp, zeros
from .gates import Gate, add_rows

BLOCK_BYTES = 1 << 20  # rows of logits exponentiated while in cache: about 1 MiB


def _block_rows(vocab_size, itemsize):
    return max(1, BLOCK_BYTES // (vocab_size * itemsize))


def _vocab_bounds(vocab_size):
    """Where the vocabulary is cut for the threads: [0, ..., V]."""
    parts = min(parallel_parts(), max(1, vocab_size // 512))
    return [vocab_size * k // parts for k in range(parts + 1)]


def _exp_part(hidden, weight, bias, targets, lo, hi, out):
    """Columns lo:hi of the softmax: ``out`` (N, hi - lo) <- exp(hidden W[lo:hi]^T + b[lo:hi]).

    Returns (row sums of out (N,), each row's target logit where the target
    lies in lo:hi, else 0 (N,)).
    """
    N = hidden.shape[0]
    w = weight[lo:hi]
    b = None if bias is None else bias[lo:hi]
    sums = empty(N, dtype=out.dtype)
    picked = zeros(N, dtype=out.dtype)
    step = _block_rows(hi - lo, out.itemsize)
    with xp.errstate(over="ignore", under="ignore"):  # found from the sums; errstate is per thread
        for r in range(0, N, step):
            z = xp.matmul(hidden[r:r + step], w.T, out=out[r:r + step])
            if b is not None:
                z += b
            t = targets[r:r + step] - lo
            inside = xp.flatnonzero((t >= 0) & (t < hi - lo))
            picked[r + inside] = z[inside, t[inside]]
            xp.exp(z, out=z)
            sums[r:r + step] = z.sum(axis=1)
    return sums, picked


def _exp_logits(hidden, weight, bias, targets):
    """exp of all logits, by vocabulary parts: ([(lo, hi, exps (N, hi - lo))], sums (N,), picked (N,)).

    ``log(sums) - picked`` is -log p(target). Rows whose exponentials over-
    or underflow are redone with the row maximum subtracted first.
    """
    N = hidden.shape[0]
    bounds = _vocab_bounds(weight.shape[0])
    parts = [(lo, hi, take((N, hi - lo), hidden.dtype)) for lo, hi in zip(bounds[:-1], bounds[1:])]
    results = run_parallel([
        (lambda lo=lo, hi=hi, out=out: _exp_part(hidden, weight, bias, targets, lo, hi, out))
        for lo, hi, out in parts])
    sums = sum(r[0] for r in results)
    picked = sum(r[1] for r in results)
    info = xp.finfo(hidden.dtype)
    bad = xp.flatnonzero(~(xp.isfinite(sums) & (sums > info.tiny / info.eps)))
    if bad.size:
        z = hidden[bad] @ weight.T
        if bias is not None:
            z += bias
        z -= z.max(axis=1, keepdims=True)
        picked[bad] = z[xp.arange(len(bad)), targets[bad]]
        xp.exp(z, out=z)
        sums[bad] = z.sum(axis=1)
        for lo, hi, out in parts:
            out[bad] = z[:, lo:hi]
    return parts, sums, picked


class LinearSoftmaxCE(Gate):
    """hidden (N, H), weight (V, H), bias (V,) or None, targets (N,), weights (N,) -> loss.

    ``loss = sum_i weights[i] * -log softmax(hidden[i] W^T + b)[targets[i]]``.
    Equal to MatMul -> BiasAdd -> SoftmaxCE of ``gates.py`` (checked in the tests).

    The gradient of the logits is ``dz = c * e - scale * onehot(targets)``
    with ``e = exp(z)``, ``c = scale / sum(e)`` per row, ``scale = weights * dloss``.
    Its per-row factor moves onto the small (N, H) side of each product and
    the one-hot part becomes a row gather / scatter, so the backward is the
    two (N, V)-sized matrix products on ``e`` (by vocabulary part) and nothing
    else of size N x V.
    """

    def forward(self, hidden, weight, bias, targets, weights):
        parts, sums, picked = _exp_logits(hidden, weight, bias, targets)
        nll = xp.log(sums) - picked
        loss = float((weights * nll).sum(dtype=xp.float64))
        return loss, (hidden, weight, bias is not None, targets, weights, parts, sums)

    def backward(self, saved, dloss):
        hidden, weight, has_bias, targets, weights, parts, sums = saved
        scale = (weights * dloss).astype(hidden.dtype, copy=False)  # (N,)
        c = scale / sums  # (N,)
        scaled_hidden = hidden * c[:, None]  # (N, H)
        d_weight = empty(weight.shape, dtype=hidden.dtype)  # (V, H), filled part by part

        def part(lo, hi, exps):
            xp.matmul(exps.T, scaled_hidden, out=d_weight[lo:hi])
            return exps @ weight[lo:hi], (c @ exps if has_bias else None)

        results = run_parallel([(lambda p=p: part(*p)) for p in parts])
        d_hidden = sum(r[0] for r in results)  # (N, H)
        d_hidden *= c[:, None]
        d_hidden -= scale[:, None] * weight[targets]
        add_rows(d_weight, targets, hidden * -scale[:, None])
        d_bias = None
        if has_bias:
            d_bias = xp.concatenate([r[1] for r in results])
            d_bias -= xp.bincount(targets, weights=scale, minlength=len(d_bias)).astype(d_bias.dtype)
        return d_hidden, d_weight, d_bias, None, None


def nll_rows(hidden, weight, bias, targets, max_rows=1024):
    """Forward only: -log p(target) for each row, (N,).

    Logits are made ``max_rows`` rows at a time in reused buffers, so memory
    stays at one block of logits whatever N is.
    """
    N = hidden.shape[0]
    nll = empty(N, dtype=hidden.dtype)
    for lo in range(0, N, max_rows):
        hi = min(lo + max_rows, N)
        _, sums, picked = _exp_logits(hidden[lo:hi], weight, bias, targets[lo:hi])
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
