"""The output layer: decoder projection, softmax and cross-entropy, fused.

This is where a word-level language model spends its time: three
(N, H) x (H, V) sized matrix products per batch (logits, the decoder's
gradient, the hidden gradient). Everything else is arranged around them:

* the vocabulary is split into parts, one per rnnlab thread
  (``backend.run_parallel``); a thread makes its part of the logits in one
  matrix product (up to ``BLOCK_BYTES`` of logits at a time) and
  exponentiates it in place. Small row blocks would keep the logits in
  cache but cost more than they save: OpenBLAS packs the weight again for
  every call, and a 64-row block of float32 logits made the products of a
  1280-row chunk about 25% slower;
* softmax needs no shift by the row maximum while exp neither overflows nor
  underflows (tanh states, ordinary weights); rows where it does are found
  from their sums and redone with the shift;
* the backward needs no (N, V) pass of its own (see ``LinearSoftmaxCE``);
* a bias rides in the products as one more column instead of an (N, V)
  pass: [hidden | 1] against [W | b] for the logits, exps against [W | 1]
  for the hidden-side product and the row sums at once, [c hidden | c]
  against the exps for the decoder's and the bias's gradients;
* with plain SGD the decoder takes its step inside the backward
  (``LinearSoftmaxCE(sgd_lr=...)``), so no (V, H) gradient is formed;
* the (N, V) buffers come from ``backend.take`` and are reused once free.
"""
from __future__ import annotations

from .backend import empty, parallel_parts, run_parallel, take, xp
from .gates import Gate, add_rows

BLOCK_BYTES = 32 << 20  # logits made by one matrix product, per thread: at most 32 MiB
LOGITS_BYTES = 64 << 20  # forward-only evaluation holds at most this much of logits


def _block_rows(vocab_size, itemsize):
    return max(1, BLOCK_BYTES // (vocab_size * itemsize))


def _vocab_bounds(vocab_size):
    """Where the vocabulary is cut for the threads: [0, ..., V]."""
    parts = min(parallel_parts(), max(1, vocab_size // 512))
    return [vocab_size * k // parts for k in range(parts + 1)]


def _exp_part(hidden, weight, bias, lo, hi, out, product):
    """Columns lo:hi of the softmax: ``out`` (N, hi - lo) <- exp(hidden W[lo:hi]^T + b[lo:hi]).

    With a bias, ``hidden`` comes with a last column of ones (N, H + 1) and
    the bias joins W's part as its last column, so the matrix product adds it
    (an (N, V) pass of its own cost more than a tenth of the product); with
    ``product`` too, that column then turns to ones and the product yields
    the row sums (another (N, V) pass saved).
    Returns (row sums of out (N,), and with ``product`` out @ W[lo:hi]
    (N, H), the backward's hidden-side product, made while W[lo:hi] is at
    hand). Little Python runs here: the two parts' threads share the GIL.
    """
    N = hidden.shape[0]
    w = weight[lo:hi]
    if bias is None:
        w_in = w
    else:
        w_in = empty((hi - lo, w.shape[1] + 1), dtype=w.dtype)  # [W[lo:hi] | b[lo:hi]]
        w_in[:, :-1] = w
        w_in[:, -1] = bias[lo:hi]
    # With both, the product gives the row sums too: out @ [W | 1] = [out @ W | sums].
    sums_from_product = product and bias is not None
    sums = empty(N, dtype=out.dtype)
    step = _block_rows(hi - lo, out.itemsize)
    # Over- and underflow are found from the sums, and inf * 0 in a bad row's
    # product is redone by the caller: none of them may warn (errstate is per thread).
    with xp.errstate(over="ignore", under="ignore", invalid="ignore"):
        for r in range(0, N, step):
            z = xp.matmul(hidden[r:r + step], w_in.T, out=out[r:r + step])
            xp.exp(z, out=z)
            if not sums_from_product:
                sums[r:r + step] = z.sum(axis=1)
        if not product:
            return sums, None
        if not sums_from_product:
            return sums, out @ w
        w_in[:, -1] = 1
        both = out @ w_in  # (N, H + 1)
        return both[:, -1], both[:, :-1]


def _exp_logits(hidden, weight, bias, targets, product=False):
    """exp of all logits, by vocabulary parts.

    Returns ([(lo, hi, exps (N, hi - lo))], sums (N,), picked (N,), the
    targets' weight rows W[targets] (N, H), and with ``product`` exps @
    weight (N, H), else None). ``picked`` is each row's target logit, so
    ``log(sums) - picked`` is -log p(target). Rows whose exponentials over-
    or underflow are redone with the row maximum subtracted first.
    """
    N = hidden.shape[0]
    bounds = _vocab_bounds(weight.shape[0])
    parts = [(lo, hi, take((N, hi - lo), hidden.dtype)) for lo, hi in zip(bounds[:-1], bounds[1:])]
    rows = hidden
    if bias is not None:  # [hidden | 1] (N, H + 1): see _exp_part
        rows = empty((N, hidden.shape[1] + 1), dtype=hidden.dtype)
        rows[:, :-1] = hidden
        rows[:, -1] = 1
    results = run_parallel([
        (lambda lo=lo, hi=hi, out=out: _exp_part(rows, weight, bias, lo, hi, out, product))
        for lo, hi, out in parts])
    sums = sum(r[0] for r in results)
    products = sum(r[1] for r in results) if product else None
    target_rows = weight[targets]  # (N, H)
    picked = xp.einsum("ij,ij->i", hidden, target_rows)
    if bias is not None:
        picked += bias[targets]
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
        if product:
            products[bad] = z @ weight
    return parts, sums, picked, target_rows, products


class LinearSoftmaxCE(Gate):
    """hidden (N, H), weight (V, H), bias (V,) or None, targets (N,), weights (N,) -> loss.

    ``loss = sum_i weights[i] * -log softmax(hidden[i] W^T + b)[targets[i]]``.
    Equal to MatMul -> BiasAdd -> SoftmaxCE of ``gates.py`` (checked in the tests).

    The gradient of the logits is ``dz = c * e - scale * onehot(targets)``
    with ``e = exp(z)``, ``c = scale / sum(e)`` per row, ``scale = weights * dloss``.
    Its per-row factor moves onto the small (N, H) side of each product and
    the one-hot part becomes a row gather / scatter, so the three (N, V)-sized
    matrix products (the logits, ``e @ W`` made in the forward while each
    thread holds its part of W, ``e^T @ (c hidden)`` in the backward) are
    all there is of size N x V.

    With ``sgd_lr`` the backward takes the SGD step of the decoder instead,
    ``weight -= sgd_lr * d_weight`` (and the bias likewise) in place, part by
    part, and returns no gradient for them; the hidden gradient is the one at
    the weights before the step. No (V, H) gradient is ever formed.
    """

    def __init__(self, sgd_lr=None):
        self.sgd_lr = sgd_lr

    def forward(self, hidden, weight, bias, targets, weights):
        parts, sums, picked, target_rows, products = _exp_logits(hidden, weight, bias, targets, product=True)
        nll = xp.log(sums) - picked
        loss = float((weights * nll).sum(dtype=xp.float64))
        return loss, (hidden, weight, bias, targets, weights, parts, sums, target_rows, products)

    def backward(self, saved, dloss):
        hidden, weight, bias, targets, weights, parts, sums, target_rows, products = saved
        lr = self.sgd_lr
        scale = (weights * dloss).astype(hidden.dtype, copy=False)  # (N,)
        c = scale / sums  # (N,)
        d_hidden = products * c[:, None]  # (N, H)
        d_hidden -= scale[:, None] * target_rows
        if lr is not None:
            self._step(hidden, weight, bias, targets, parts, c * lr, scale * lr)
            return d_hidden, None, None, None, None
        # The weight's gradient: (c e)^T hidden part by part, less the one-hot
        # rows (targets, scale * hidden); the bias's: c e summed, less the one-hot.
        d_weight = empty(weight.shape, dtype=hidden.dtype)  # (V, H), filled part by part
        d_bias = None if bias is None else empty(bias.shape, dtype=hidden.dtype)
        run_parallel(_by_parts(parts, hidden, c, d_weight, d_bias, subtract=False))
        add_rows(d_weight, targets, hidden * -scale[:, None])
        if bias is not None:
            d_bias -= xp.bincount(targets, weights=scale, minlength=len(d_bias)).astype(d_bias.dtype)
        return d_hidden, d_weight, d_bias, None, None

    def _step(self, hidden, weight, bias, targets, parts, c_lr, scale_lr):
        """The SGD step in place: weight -= lr * d_weight part by part, then the one-hot rows."""
        run_parallel(_by_parts(parts, hidden, c_lr, weight, bias, subtract=True))
        add_rows(weight, targets, hidden * scale_lr[:, None])
        if bias is not None:
            bias += xp.bincount(targets, weights=scale_lr, minlength=len(bias)).astype(bias.dtype)


def _by_parts(parts, hidden, c, w_out, b_out, subtract):
    """Tasks writing (or with ``subtract``, taking away) (c e)^T hidden into w_out (V, H) and c e
    summed over rows into b_out (V,) (None: no bias), one vocabulary part each.

    With a bias both come from one product: e^T [c hidden | c] (hi - lo, H + 1).
    """
    H = hidden.shape[1]
    if b_out is None:
        right = hidden * c[:, None]  # (N, H)
    else:
        right = empty((hidden.shape[0], H + 1), dtype=hidden.dtype)
        xp.multiply(hidden, c[:, None], out=right[:, :H])
        right[:, H] = c

    def part(lo, hi, exps):
        if b_out is None and not subtract:
            xp.matmul(exps.T, right, out=w_out[lo:hi])
            return
        both = exps.T @ right  # (hi - lo, H or H + 1)
        if subtract:
            w_out[lo:hi] -= both[:, :H]
            if b_out is not None:
                b_out[lo:hi] -= both[:, H]
        else:
            w_out[lo:hi] = both[:, :H]
            if b_out is not None:
                b_out[lo:hi] = both[:, H]

    return [(lambda p=p: part(*p)) for p in parts]


def nll_rows(hidden, weight, bias, targets, max_rows=None):
    """Forward only: -log p(target) for each row, (N,).

    Logits are made ``max_rows`` rows at a time (by default as many as fit
    in ``LOGITS_BYTES``) in reused buffers, so memory stays at one block of
    logits whatever N is.
    """
    N = hidden.shape[0]
    if max_rows is None:
        max_rows = max(1, LOGITS_BYTES // (weight.shape[0] * hidden.itemsize))
    nll = empty(N, dtype=hidden.dtype)
    for lo in range(0, N, max_rows):
        hi = min(lo + max_rows, N)
        _, sums, picked, _, _ = _exp_logits(hidden[lo:hi], weight, bias, targets[lo:hi])
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
