"""The two-level softmax shared by the class-based and the adaptive output layers.

The ids are cut into contiguous ranges (``Layout``)::

    ids   0 ........ S-1 | S ..... c2-1 | c2 ..... c3-1 | ... | ck ..... V-1
          shortlist        cluster 0      cluster 1             cluster K-1
    head  [ one entry per shortlist word | one entry per cluster ]   (S + K entries)

and ``log p(w | h) = log p_head(w | h)`` for a shortlist word,
``log p_head(cluster | h) + log p_cluster(w | h)`` otherwise, with
``p_cluster`` a softmax over the words of that cluster only. The class-based
layer has no shortlist (S = 0: the head is over classes) and one table of
word vectors (V, H) with a bias; the adaptive layer has a shortlist and, per
cluster, a projection (d_k, H) to a narrower space and the words' vectors
(n_k, d_k) there, no bias.

Training runs one fused gate, ``TwoLevelSoftmaxCE``. No (N, V) array is
formed: the head is the full softmax's ``LinearSoftmaxCE`` over S + K
entries, and a row's tail is computed only for its target's cluster. Rows
are grouped by cluster once per batch (``route``: one search, one stable
sort) and each cluster's rows make one matrix product against its words (a
``Block``)::

    routed rows (by cluster)   | c0 c0 c0 | c1 | c2 c2 | ...
    blocks                     | block 0  | block 1   | ...   (c1 and c2 merged)
    a block's logits           (its words, its rows): weight @ rows^T

A block is done in one go, forward and backward (or the SGD step), while
its words' vectors are in cache: at a batch of a few hundred rows nearly
every cluster has a target, so the tail reads most of its (V, H) weights
per batch however few its multiply-adds, and it reads them from memory
once. The rows are the logits' columns: OpenBLAS makes weight @ rows^T
much faster than rows @ weight^T at these shapes (a few rows), and the
reductions over the words run as matrix-vector products.

Where there is no projection (the class layer) neighbouring clusters with
few rows share one product (a merged block; each row's logits outside its
own cluster are set to -inf, so their exps are 0): with ~3 sqrt(V) classes,
most of them with a handful of rows per batch, a small product's call
costs more than the multiply-adds it saves. The masked entries are exact
zeros in every gradient and step, so the result is the same.

A cluster of one word contributes nothing (log p_cluster = 0, no gradient):
its rows skip the tail, as do rows whose weight is 0 (masked targets).
"""
from __future__ import annotations

from functools import partial
from typing import NamedTuple

from .backend import empty, xp, zeros
from .gates import Gate, log_softmax
from .output import LOGITS_BYTES, LinearSoftmaxCE, nll_rows as head_nll_rows
from .row_grads import RowRanges
from .threads import run_parallel

# A neighbouring cluster joins a block when that wastes at most this many multiply-adds
# (``plan_blocks``): about what one more block's calls cost. On (35, 20) batches of a
# 33k-word vocabulary with 182 classes, H = 200, the tail took about as long from 2^14 to
# 2^18 (2^18 at most 15% faster) and longer beyond (2^20: 10-20%, 2^22: 40-80%).
MERGE_WORK = 1 << 18


class Layout(NamedTuple):
    """Where a two-level layer cuts the ids, and how its tail's parameters come.

    Cluster k holds the ids [bounds[k], bounds[k + 1]); bounds[0] is the
    shortlist's size S and bounds[-1] the vocabulary's V. The tail's inputs to
    the gate are, with ``projected``, (projection_0 (d_0, H), weight_0 (n_0, d_0),
    projection_1, weight_1, ...); without, (word weight (V, H), word bias (V,)
    or None), row i of the weight being id i's vector.
    """

    bounds: tuple
    projected: bool

    @property
    def shortlist(self) -> int:
        return self.bounds[0]

    @property
    def num_clusters(self) -> int:
        return len(self.bounds) - 1

    @property
    def vocab_size(self) -> int:
        return self.bounds[-1]

    @property
    def max_cluster(self) -> int:
        return max(b - a for a, b in zip(self.bounds[:-1], self.bounds[1:]))


class ClusterParams(NamedTuple):
    """One block's parameters (or gradients): the words' rows, and the projection or None, the
    bias rows or None."""

    projection: object  # (d, H) or None
    weight: object  # (hi - lo, d)
    bias: object  # (hi - lo,) or None


def block_params(layout, tail, block) -> ClusterParams:
    """The parameters of ``block`` among the tail's arrays (views: writing them writes the tail).
    The same for the tail's gradient buffers, which come in the tail's order."""
    if layout.projected:
        k = block.cluster
        return ClusterParams(tail[2 * k], tail[2 * k + 1], None)
    weight, bias = tail
    return ClusterParams(None, weight[block.lo:block.hi], None if bias is None else bias[block.lo:block.hi])


class Routes(NamedTuple):
    """Where each row's target lies, for one batch of N rows (M of them go through a tail)."""

    head_targets: object  # (N,) the head entry: the target in the shortlist, else S + its cluster
    rows: object  # (M,) the rows with a tail to compute, grouped by cluster (in cluster order)
    clusters: object  # (M,) their clusters
    starts: object  # (K + 1,) rows[starts[k]:starts[k + 1]] are cluster k's
    targets: object  # (M,) their targets


def route(layout, targets, weights=None) -> Routes:
    """Group the rows by their target's cluster: one search and one stable sort per batch.

    A row goes through a tail when its target is outside the shortlist, in a
    cluster of more than one word, and (with ``weights`` (N,)) its weight is not 0.
    """
    bounds = xp.asarray(layout.bounds)
    cluster = xp.searchsorted(bounds, targets, side="right") - 1  # (N,): -1 in the shortlist
    in_tail = cluster >= 0
    head_targets = xp.where(in_tail, layout.shortlist + cluster, targets)
    sizes = xp.diff(bounds)
    keep = in_tail & (sizes[xp.maximum(cluster, 0)] > 1)
    if weights is not None:
        keep &= weights != 0
    kept = xp.flatnonzero(keep)
    rows = kept[xp.argsort(cluster[kept], kind="stable")]
    clusters = cluster[rows]
    counts = xp.bincount(clusters, minlength=layout.num_clusters)
    starts = xp.zeros(layout.num_clusters + 1, dtype=xp.intp)
    xp.cumsum(counts, out=starts[1:])
    return Routes(head_targets, rows, clusters, starts, targets[rows])


class Block(NamedTuple):
    """One matrix product of the tail: the routed rows first:last against the ids lo:hi.

    A block is one cluster (``cluster``), or without a projection a run of
    neighbouring clusters from ``cluster`` on (``merged``).
    """

    first: int
    last: int
    lo: int
    hi: int
    cluster: int
    merged: bool


def plan_blocks(layout, starts, width) -> list:
    """The tail's blocks for a batch whose cluster k has the routed rows starts[k]:starts[k + 1].

    Without a projection a cluster joins the block before it when that wastes
    at most ``MERGE_WORK`` multiply-adds of ``width`` (H) entries each
    (``_merge_waste``) and the block stays no wider than the widest cluster
    (evaluation sizes its chunks of rows by that width).
    """
    bounds = layout.bounds
    widest = layout.max_cluster
    blocks = []
    for k in range(layout.num_clusters):
        block = Block(int(starts[k]), int(starts[k + 1]), bounds[k], bounds[k + 1], k, False)
        if block.first == block.last:
            continue
        if (blocks and not layout.projected and block.hi - blocks[-1].lo <= widest
                and _merge_waste(blocks[-1], block) * width <= MERGE_WORK):
            blocks[-1] = blocks[-1]._replace(last=block.last, hi=block.hi, merged=True)
        else:
            blocks.append(block)
    return blocks


def _merge_waste(before, after):
    """The logits one product of both blocks makes beyond the two products apart: each one's
    rows against the other's words, and against the words of empty clusters between them."""
    rows_before, rows_after = before.last - before.first, after.last - after.first
    both = (rows_before + rows_after) * (after.hi - before.lo)
    return both - rows_before * (before.hi - before.lo) - rows_after * (after.hi - after.lo)


def _block_inputs(params, rows):
    """A block's inputs to its words' product, one column per row: (d, r) from its rows (r, H)."""
    rows_t = xp.ascontiguousarray(rows.T)
    return rows_t if params.projection is None else params.projection @ rows_t


def _block_logits(block, params, inputs_t, clusters, bounds):
    """weight @ inputs_t (+ bias): the logits of the block's words (rows) for its rows (columns),
    (w, r); with ``merged``, -inf outside each row's own cluster (``clusters`` (r,); ``bounds``
    the layout's, as an array).

    Made as weight @ inputs_t, not inputs @ weight^T: OpenBLAS ran the latter up to
    seven times slower at these shapes (few rows against many words).
    """
    z = params.weight @ inputs_t
    if params.bias is not None:
        z += params.bias[:, None]
    if block.merged:
        ids = xp.arange(block.lo, block.hi)[:, None]
        z[(ids < bounds[clusters]) | (ids >= bounds[clusters + 1])] = -xp.inf
    return z


class BlockSoftmax(NamedTuple):
    exps: object  # (w, r) exp(logit - shift), 0 outside each row's own cluster
    sums: object  # (r,) their column sums
    nll: object  # (r,) -log p_cluster(target)


def block_softmax(batch, block, params, inputs_t, local) -> BlockSoftmax:
    """One block's softmax, its rows as columns: inputs_t (d, r) (``_block_inputs``), local (r,)
    the rows' targets less ``block.lo``.

    No shift by the maximum while exp neither overflows nor underflows (the
    sums tell); columns where it does are made again with the shift. A
    reduction along the first axis of a (w, r) array runs an inner loop of r
    entries per word, so the sums are a matrix-vector product instead.
    """
    clusters = batch.routes.clusters[block.first:block.last]
    z = _block_logits(block, params, inputs_t, clusters, batch.bounds)
    w, r = z.shape
    columns = batch.columns[:r]
    picked = z[local, columns]
    exps = xp.exp(z, out=z)
    sums = batch.ones[:w] @ exps
    if not (sums.min() > batch.low and sums.max() < xp.inf):
        bad = xp.flatnonzero(~(sums > batch.low) | ~(sums < xp.inf))
        shifted = _block_logits(block, params, inputs_t[:, bad], clusters[bad], batch.bounds)
        shifted -= shifted.max(axis=0)
        picked[bad] = shifted[local[bad], columns[:len(bad)]]
        exps[:, bad] = xp.exp(shifted)
        sums[bad] = exps[:, bad].sum(axis=0)
    return BlockSoftmax(exps, sums, xp.log(sums) - picked)


def _outer_sum(a_t, b, out=None):
    """a_t (w, r) @ b (r, d): a sum of r outer products. With r = 1 a zero second term is added:
    OpenBLAS ran the product of inner size 1 about ten times slower than that of size 2."""
    if a_t.shape[1] == 1:
        a_t = xp.concatenate([a_t, zeros((a_t.shape[0], 1), dtype=a_t.dtype)], axis=1)
        b = xp.concatenate([b, zeros((1, b.shape[1]), dtype=b.dtype)])
    return xp.matmul(a_t, b, out=out)


class TailResult(NamedTuple):
    nll: object  # (M,) -log p_cluster(target) of the routed rows
    d_rows: object  # (M, H) the gradient of the rows, or None (forward only)


class TailBatch(NamedTuple):
    """What the blocks of one batch's tail read and write (see ``tail_forward_backward``)."""

    layout: Layout
    routes: Routes
    rows: object  # (M, H) the routed rows
    tail: tuple  # the tail's parameters
    scale: object  # (M,) the rows' weights in the loss, or None (forward only)
    grads: tuple  # the tail's gradients, written block by block (arrays, or RowRanges filled); or None
    lr: object  # the SGD step's learning rate (the rows' dtype), or None
    nll: object  # (M,) written block by block
    d_rows: object  # (M, H) written block by block, or None (forward only)
    ones: object  # at least as many ones as the widest block has words
    columns: object  # 0, 1, ... at least as many as the most rows of a block
    bounds: object  # the layout's bounds as an array
    low: object  # a sum of exps at most this underflowed (see output._bad_rows)


def tail_forward_backward(layout, routes, rows, tail, scale, grads=None, sgd_lr=None) -> TailResult:
    """The tail's loss terms and their gradient for the routed rows (M, H) = hidden[routes.rows]
    with weights ``scale`` (M,).

    The parameters' gradients go into ``grads`` (zeroed arrays in the tail's
    order; without a projection, also empty ``RowRanges`` for the word table
    and the bias (or None), which gain one block per product), or with
    ``sgd_lr`` the parameters take their SGD step in place.
    With ``grads`` and ``sgd_lr`` both None only the loss terms are made.

    With a projection (the adaptive layer: a few large clusters) the blocks
    are shared among rnnlab's threads, each writing its own rows and
    parameters: an LSTM's clipped step at V = 33k (cutoffs 2000, 10000) went
    from 38.3 to 35.3 ms, at 100k from 80 to 73 ms. Without (the class
    layer: ~3 sqrt(V) small blocks) they run one after another in the
    calling thread: shared, they ran no faster (182 classes at 33k), their
    products being small and the Python between them holding the GIL; and
    their sparse gradients gain blocks in order.
    """
    M, H = rows.shape
    backward = grads is not None or sgd_lr is not None
    blocks = plan_blocks(layout, routes.starts, H)
    info = xp.finfo(rows.dtype)
    batch = TailBatch(layout, routes, rows, tail, scale, grads, None if sgd_lr is None else rows.dtype.type(sgd_lr),
                      empty(M, dtype=rows.dtype), empty((M, H), dtype=rows.dtype) if backward else None,
                      xp.ones(max((block.hi - block.lo for block in blocks), default=0), dtype=rows.dtype),
                      xp.arange(max((block.last - block.first for block in blocks), default=0)),
                      xp.asarray(layout.bounds), info.tiny / info.eps)
    # Exps that over- or underflow are redone. OpenBLAS's small products can raise the invalid flag
    # on finite operands (a vector kernel's unused lanes), which numpy reports as a warning; a real
    # NaN would reach the loss, which the trainer checks.
    if layout.projected and len(blocks) > 1:
        run_parallel([partial(_run_blocks_quietly, batch, [block]) for block in blocks])
    else:
        _run_blocks_quietly(batch, blocks)
    return TailResult(batch.nll, batch.d_rows)


def _run_blocks_quietly(batch, blocks):
    with xp.errstate(over="ignore", under="ignore", invalid="ignore"):  # (per thread)
        for block in blocks:
            _run_block(batch, block)


def _run_block(batch, block):
    """One block in one go, while its words are in cache: its rows' nll and, unless forward only,
    their gradient and its parameters' (or their step).

    The logits' gradient is ``du = c exps - scale onehot(target)``, ``c = scale / sums``
    per row; it is held as ``e = exps - sums onehot(target)`` (w, r), du = e c,
    and the factor c goes to the small side of each product. With ``x`` the
    block's input (r, d) (its rows, or their projection ``rows P^T``):
    ``d x = c (e^T weight)``, ``d weight = e (c x)``, ``d bias = e c``, and
    with a projection ``d P = (d x)^T rows`` and ``d rows = (d x) P``. Every
    product reads a parameter before its step.
    """
    a, b = block.first, block.last
    routes, rows = batch.routes, batch.rows[a:b]
    params = block_params(batch.layout, batch.tail, block)
    local = routes.targets[a:b] - block.lo
    inputs_t = _block_inputs(params, rows)
    soft = block_softmax(batch, block, params, inputs_t, local)
    batch.nll[a:b] = soft.nll
    if batch.d_rows is None:
        return
    c = batch.scale[a:b] / soft.sums
    e = soft.exps
    e[local, batch.columns[:b - a]] -= soft.sums
    d_x = (e.T @ params.weight) * c[:, None]  # (r, d)
    projected = params.projection is not None
    if projected:
        xp.matmul(d_x, params.projection, out=batch.d_rows[a:b])
        x = inputs_t.T
    else:
        batch.d_rows[a:b] = d_x
        x = rows
    if batch.lr is None:
        into = _gradient_block(batch, block, params)
        _outer_sum(e, x * c[:, None], out=into.weight)
        if projected:
            xp.matmul(d_x.T, rows, out=into.projection)
        if into.bias is not None:
            xp.matmul(e, c, out=into.bias)
        return
    projection, weight, bias = params  # views: stepping them steps the tail
    c_lr = c * batch.lr
    weight -= _outer_sum(e, x * c_lr[:, None])
    if projected:
        projection -= d_x.T @ (rows * batch.lr)
    if bias is not None:
        bias -= e @ c_lr


def _gradient_block(batch, block, params) -> ClusterParams:
    """Where a block's gradients go: views of the tail's dense gradients, or new blocks of its
    ``RowRanges`` (the word table's and the bias's rows lo:hi, to be written whole)."""
    if not isinstance(batch.grads[0], RowRanges):
        return block_params(batch.layout, batch.grads, block)
    weight, bias = batch.grads
    into = ClusterParams(None, empty(params.weight.shape, dtype=params.weight.dtype),
                         None if bias is None else empty(params.bias.shape, dtype=params.bias.dtype))
    for grad, values in ((weight, into.weight), (bias, into.bias)):
        if grad is not None:
            grad.starts.append(block.lo)
            grad.blocks.append(values)
    return into


class TwoLevelSaved(NamedTuple):
    head: LinearSoftmaxCE
    head_saved: tuple
    rows: object  # (M,) the rows with a tail term
    d_rows: object  # (M, H) their tail's gradient at d loss 1
    d_tail: tuple  # the tail's gradients at d loss 1, in its order (see ``sparse``); None each with sgd_lr


class TwoLevelSoftmaxCE(Gate):
    """hidden (N, H), head weight (S + K, H), head bias (S + K,) or None, targets (N,),
    weights (N,), then the tail's parameters (``Layout``) -> loss.

    ``loss = sum_i weights[i] * -log p(targets[i] | hidden[i])`` with the
    two-level p of the module docstring: the head's cross-entropy (the full
    softmax's fused ``LinearSoftmaxCE`` on the head entries) plus, for a row
    whose target is in a cluster, the cluster's (``tail_forward_backward``).

    The tail's backward is made in the forward, block by block while each
    block's words are in cache, at d loss 1; the backward scales it by d
    loss (the loss is linear in the weights). With ``sgd_lr`` the gate is
    the loss the backward starts from (seeded with 1), and its forward takes
    the SGD step of the head and the tail in place; the backward returns no
    gradient for them, and the hidden gradient is the one at the parameters
    before the step. Only the words of blocks with targets move (for the
    class layer: the batch's target classes, and in a merged block their
    neighbours, by exactly 0).

    With ``sparse`` and no projection (the class layer) the gradients of the
    word table and its bias come as ``row_grads.RowRanges``: the rows of the
    blocks with targets, no (V, H) array.
    """

    def __init__(self, layout: Layout, sgd_lr=None, sparse=False):
        self.layout = layout
        self.sgd_lr = sgd_lr
        self.sparse = sparse and not layout.projected

    def forward(self, hidden, head_weight, head_bias, targets, weights, *tail):
        routes = route(self.layout, targets, weights)
        head = LinearSoftmaxCE(self.sgd_lr)
        head_loss, head_saved = head.forward(hidden, head_weight, head_bias, routes.head_targets, weights)
        row_weights = weights[routes.rows]
        d_tail = (None,) * len(tail)
        if self.sgd_lr is None and self.sparse:
            d_tail = tuple(None if t is None else RowRanges(t.shape, t.dtype, [], []) for t in tail)
        elif self.sgd_lr is None:
            d_tail = tuple(None if t is None else zeros(t.shape, dtype=t.dtype) for t in tail)
        result = tail_forward_backward(self.layout, routes, hidden[routes.rows], tail,
                                       row_weights.astype(hidden.dtype, copy=False), d_tail, self.sgd_lr)
        loss = head_loss + float((row_weights * result.nll).sum(dtype=xp.float64))
        return loss, TwoLevelSaved(head, head_saved, routes.rows, result.d_rows, d_tail)

    def backward(self, saved, dloss):
        d_hidden, d_head_weight, d_head_bias, _, _ = saved.head.backward(saved.head_saved, dloss)
        d_rows, d_tail = saved.d_rows, saved.d_tail
        if dloss != 1:  # (the stepping gate's head refused this already)
            dloss = d_hidden.dtype.type(dloss)
            d_rows = d_rows * dloss
            d_tail = tuple(None if d is None else d * dloss for d in d_tail)
        d_hidden[saved.rows] += d_rows
        return (d_hidden, d_head_weight, d_head_bias, None, None, *d_tail)


# -- forward only -----------------------------------------------------------------------


def nll_rows(layout, hidden, head_weight, head_bias, tail, targets):
    """Forward only: -log p(target) for each row, hidden (N, H) -> (N,).

    The head as the full softmax's ``nll_rows``; the tails by chunks of rows
    small enough that a chunk's logits fit ``LOGITS_BYTES``.
    """
    N = hidden.shape[0]
    nll = empty(N, dtype=hidden.dtype)
    step = max(1, LOGITS_BYTES // (layout.max_cluster * hidden.itemsize))
    for lo in range(0, N, step):
        hi = min(lo + step, N)
        routes = route(layout, targets[lo:hi])
        nll[lo:hi] = head_nll_rows(hidden[lo:hi], head_weight, head_bias, routes.head_targets)
        nll[lo + routes.rows] += tail_forward_backward(layout, routes, hidden[lo:hi][routes.rows], tail, None).nll
    return nll


def log_probs(layout, hidden, head_weight, head_bias, tail):
    """Forward only: log p(w | hidden) for every id, hidden (N, H) -> (N, V)."""
    N = hidden.shape[0]
    S = layout.shortlist
    head = hidden @ head_weight.T
    if head_bias is not None:
        head += head_bias
    head = log_softmax(head)
    out = empty((N, layout.vocab_size), dtype=hidden.dtype)
    out[:, :S] = head[:, :S]
    for k, (lo, hi) in enumerate(zip(layout.bounds[:-1], layout.bounds[1:])):
        params = block_params(layout, tail, Block(0, N, lo, hi, k, False))
        x = hidden if params.projection is None else hidden @ params.projection.T
        z = out[:, lo:hi]
        xp.matmul(x, params.weight.T, out=z)
        if params.bias is not None:
            z += params.bias
        z[:] = log_softmax(z)
        z += head[:, S + k, None]
    return out


# -- configuration ------------------------------------------------------------------------


def check_cutoffs(cutoffs, vocab_size, layer) -> tuple:
    """The cut points 0 < c1 < ... < V as a tuple of ints; ``ValueError`` (one line) if they do not fit."""
    cutoffs = tuple(cutoffs)
    if not cutoffs:
        raise ValueError(f"the {layer} output layer needs cutoffs 0 < c1 < ... < {vocab_size} (the vocabulary size)")
    for c in cutoffs:
        if isinstance(c, bool) or not isinstance(c, (int, xp.integer)):
            raise ValueError(f"cutoffs must be integers, not {c!r}")
        if not 0 < c < vocab_size:
            raise ValueError(f"cutoffs must lie in 1..{vocab_size - 1} for a vocabulary of {vocab_size}, not {c}")
    for a, b in zip(cutoffs[:-1], cutoffs[1:]):
        if a == b:
            raise ValueError(f"cutoffs must be distinct, but {a} is listed twice")
        if b < a:
            raise ValueError(f"cutoffs must increase, but {b} follows {a}")
    return tuple(int(c) for c in cutoffs)


def init_uniform(shapes, gen, dtype, bound) -> dict:
    """Parameters of the given shapes (name -> shape), in that order: weights uniform in
    [-bound, bound] drawn from ``gen``, biases (names ending ``.bias``) at zero."""
    return {name: zeros(shape, dtype=dtype) if name.endswith(".bias")
            else gen.uniform(-bound, bound, shape).astype(dtype) for name, shape in shapes.items()}
