"""Output layers: the interface (``OutputLayer``), and the full softmax (``FullSoftmax``) with its
fused gate (``LinearSoftmaxCE``: decoder projection, softmax and cross-entropy).

The output layer is where a word-level language model spends its time: three
(N, H) x (H, V) sized matrix products per batch (logits, the decoder's
gradient, the hidden gradient). Everything else is arranged around them:

* the vocabulary is split into parts, one per rnnlab thread
  (``threads.run_parallel``); a thread makes its part of the logits in one
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
* a batch of few rows (N <= ``SMALL_N``: one sentence, the tutorial's
  step), in training and in evaluation, is held transposed, (H, N), the
  faster layout for such products;
  in float64 it walks each part of W in blocks small enough for OpenBLAS's
  unpacked small-matrix kernels and for L2 (``_few_rows_block``): the
  products run about a third faster, and a block of W serves both products
  that read it while still in cache;
* with plain SGD the decoder takes its step in the same call to the threads
  as the forward (``LinearSoftmaxCE(sgd_lr=...)``): the threads meet once
  the row sums are known (``threads.run_phased``) and step their parts, so
  no (V, H) gradient is formed and the calling thread is not woken between;
* the (N, V) buffers come from ``backend.take`` and are reused once free.
"""
from __future__ import annotations

from .backend import empty, take, xp, zeros
from .threads import parallel_parts, run_parallel, run_phased
from .gates import Gate, add_rows

BLOCK_BYTES = 32 << 20  # logits made by one matrix product, per thread: at most 32 MiB
LOGITS_BYTES = 64 << 20  # forward-only evaluation holds at most this much of logits
WEIGHT_BLOCK_BYTES = 384 << 10  # a few rows' float64 batch (N <= SMALL_N): W by blocks of this much, held in L2
SMALL_GEMM = 10**6  # multiply-adds per product at most, for a few rows' float64 batch (see _few_rows_block)
SMALL_N = 64


def _block_rows(vocab_size, itemsize):
    return max(1, BLOCK_BYTES // (vocab_size * itemsize))


def _vocab_bounds(vocab_size):
    """Where the vocabulary is cut for the threads: [0, ..., V], parts of at least 128 ids.

    The heads of the class and adaptive layers (a few hundred to a few
    thousand entries) gain from both threads too: 700 rows against 545
    entries, forward and backward, took 6.1 ms on one thread and 5.3 ms on
    two; 949 entries 9.8 and 7.3 ms.
    """
    parts = min(parallel_parts(), max(1, vocab_size // 128))
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
    hand). Little Python runs here: the parts' threads share the GIL.
    """
    N = hidden.shape[0]
    w = weight[lo:hi]
    if bias is None:
        w_in = w
    else:  # [W[lo:hi] | b[lo:hi]]
        w_in = _with_bias(weight, bias, lo, hi, empty((hi - lo, w.shape[1] + 1), dtype=w.dtype))
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


def _with_bias(weight, bias, a, b, into):
    """``into`` (b - a, H + 1) <- [W[a:b] | bias[a:b]]: the bias as W's last column (see _exp_part)."""
    into[:, :-1] = weight[a:b]
    into[:, -1] = bias[a:b]
    return into


def _few_rows_block(n, width, itemsize):
    """Rows of W per block when a batch of n rows walks W (``width`` columns) in blocks.

    float64: at most WEIGHT_BLOCK_BYTES of W, so a block stays in L2 between
    the two products that read it, and at most SMALL_GEMM multiply-adds per
    product: OpenBLAS (SkylakeX kernels) runs such small products without
    packing its operands, markedly faster than larger ones of the same
    shapes (``benchmarks/profile_train.py --classic`` times both;
    BENCHMARKS.md). float32 products gained nothing from blocks here (a
    small-batch training step in scratch A/B runs was fastest with one
    product per part, in the transposed layout): no blocks.
    """
    if itemsize < 8:
        return 1 << 62
    return max(1, min(WEIGHT_BLOCK_BYTES // (width * itemsize), SMALL_GEMM // (max(n, 1) * width)))


def _exp_part_few_rows(hidden_t, weight, bias, lo, hi, out, product):
    """``_exp_part`` for a batch of a few rows (N <= SMALL_N), held transposed.

    ``hidden_t`` is (H, N), or (H + 1, N) with a last row of ones when there
    is a bias; ``out`` (N, hi - lo) is the transpose of a C-ordered
    (hi - lo, N) buffer. W[lo:hi] is walked in blocks (``_few_rows_block``):
    each block's logits come as W_b hidden_t (b, N), the fast layout for
    OpenBLAS's small products (hidden W_b^T is much slower), and with
    ``product`` the block serves the second product, exps_b^T W_b, while
    still in L2, so W streams in from memory once instead of twice.
    """
    width, N = hidden_t.shape
    H = weight.shape[1]
    dtype = out.dtype
    both = zeros((N, width), dtype=dtype) if product else None  # [exps @ W | row sums (with a bias)]
    step = _few_rows_block(N, H + 1, out.itemsize)
    w_in = None if bias is None else empty((min(step, hi - lo), H + 1), dtype=dtype)
    out_t = out.T  # (hi - lo, N), C-ordered
    with xp.errstate(over="ignore", under="ignore", invalid="ignore"):
        for a in range(lo, hi, step):
            b = min(a + step, hi)
            z = out_t[a - lo:b - lo]  # (b - a, N)
            w = weight[a:b] if bias is None else _with_bias(weight, bias, a, b, w_in[:b - a])
            xp.matmul(w, hidden_t, out=z)
            xp.exp(z, out=z)
            if product:
                if bias is not None:
                    w[:, -1] = 1
                both += z.T @ w
        if not product:
            return out_t.sum(axis=0), None
        if bias is None:  # the row sums in one pass over the part's exps, not one per block
            return out_t.sum(axis=0), both
    return both[:, -1], both[:, :-1]


def _exp_logits(hidden, weight, bias, targets, product=False, step_scale=None):
    """exp of all logits, by vocabulary parts.

    Returns ([(lo, hi, exps (N, hi - lo))], sums (N,), picked (N,), the
    targets' weight rows W[targets] (N, H), exps @ weight (N, H) with
    ``product`` else None, and whether the step below was taken).
    ``picked`` is each row's target logit, so ``log(sums) - picked`` is
    -log p(target). Rows whose exponentials over- or underflow are redone
    with the row maximum subtracted first.

    With ``step_scale`` (N,) (sgd_lr times each row's weight in the loss)
    each thread, once the sums of all parts are known, takes its part's
    share of the SGD step: weight[lo:hi] -= (exps c)^T hidden with
    c = step_scale / sums (the bias likewise), before handing back. The
    one-hot part of the step is the caller's. No part steps when a row's
    sum is bad (the caller then redoes those rows and steps).
    """
    N, H = hidden.shape
    bounds = _vocab_bounds(weight.shape[0])
    few_rows = N <= SMALL_N
    if few_rows:  # exps held transposed: (N, hi - lo) views of (hi - lo, N) buffers
        parts = [(lo, hi, take((hi - lo, N), hidden.dtype).T) for lo, hi in zip(bounds[:-1], bounds[1:])]
    else:
        parts = [(lo, hi, take((N, hi - lo), hidden.dtype)) for lo, hi in zip(bounds[:-1], bounds[1:])]
    rows = hidden
    if bias is not None:  # [hidden | 1] (N, H + 1): see _exp_part
        rows = empty((N, H + 1), dtype=hidden.dtype)
        rows[:, :-1] = hidden
        rows[:, -1] = 1
    rows_in = xp.ascontiguousarray(rows.T) if few_rows else rows  # (H or H + 1, N) when few
    make = _exp_part_few_rows if few_rows else _exp_part
    target_rows = weight[targets]  # (N, H), taken before any step
    picked = xp.vecdot(hidden, target_rows)  # (N,)
    if bias is not None:
        picked += bias[targets]
    first = [(lambda lo=lo, hi=hi, out=out: make(rows_in, weight, bias, lo, hi, out, product))
             for lo, hi, out in parts]
    if step_scale is None:
        results = run_parallel(first)
        sums = sum(r[0] for r in results)
        bad = _bad_rows(sums)
        stepped = False
    else:
        def meet(done):  # once, when every part's exps are made: the sums, bad rows, the step's factors
            sums = sum(r[0] for r in done)
            bad = _bad_rows(sums)
            return sums, bad, None if bad.size else _right(hidden, step_scale / sums, bias is not None)

        def then(lo, hi, exps, met):
            right = met[2]
            if right is not None:
                _weight_side(lo, hi, exps, right, weight, bias, subtract=True)

        results, (sums, bad, right), _ = run_phased(first, meet, [(lambda met, p=p: then(*p, met)) for p in parts])
        stepped = right is not None
    products = sum(r[1] for r in results) if product else None
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
    return parts, sums, picked, target_rows, products, stepped


def _bad_rows(sums):
    """Rows whose sum of exponentials over- or underflowed (their softmax needs the shift)."""
    info = xp.finfo(sums.dtype)
    low = info.tiny / info.eps
    if not sums.size or (sums.min() > low and xp.isfinite(sums.max())):  # the common case: two reductions
        return empty(0, dtype=xp.intp)
    return xp.flatnonzero(~(xp.isfinite(sums) & (sums > low)))


class LinearSoftmaxCE(Gate):
    """hidden (N, H), weight (V, H), bias (V,) or None, targets (N,), weights (N,) -> loss.

    ``loss = sum_i weights[i] * -log softmax(hidden[i] W^T + b)[targets[i]]``.
    Equal to MatMul -> BiasAdd -> SoftmaxCE of ``gates.py`` (checked in the tests).

    The gradient of the logits is ``dz = c * e - scale * onehot(targets)``
    with ``e = exp(z)``, ``c = scale / sum(e)`` per row, ``scale = weights * dloss``.
    Its per-row factor moves onto the small (N, H) side of each product and
    the one-hot part becomes a row gather / scatter, so the three (N, V)-sized
    matrix products (the logits, ``e @ W`` made in the forward while each
    thread holds its part of W, ``e^T @ (c hidden)``) are all there is of
    size N x V.

    With ``sgd_lr`` the gate is the loss the backward starts from (seeded
    with 1), and its forward also takes the SGD step of the decoder,
    ``weight -= sgd_lr * d_weight`` (and the bias likewise) in place: each
    thread steps its vocabulary part as soon as the row sums of all parts
    are known, without handing back to the calling thread in between. The
    backward then returns no gradient for them, and the hidden gradient is
    the one at the weights before the step. No (V, H) gradient is ever formed.
    """

    def __init__(self, sgd_lr=None):
        self.sgd_lr = sgd_lr

    def forward(self, hidden, weight, bias, targets, weights):
        lr = self.sgd_lr
        step_scale = None if lr is None else (weights * lr).astype(hidden.dtype, copy=False)
        parts, sums, picked, target_rows, products, stepped = _exp_logits(
            hidden, weight, bias, targets, product=True, step_scale=step_scale)
        nll = xp.log(sums) - picked
        loss = float((weights * nll).sum(dtype=xp.float64))
        if lr is not None:  # the rest of the step: the parts not stepped yet, the one-hot rows
            if not stepped:
                run_parallel(_by_parts(parts, hidden, step_scale / sums, weight, bias, subtract=True))
            add_rows(weight, targets, hidden * step_scale[:, None])
            if bias is not None:
                bias += xp.bincount(targets, weights=step_scale, minlength=len(bias)).astype(bias.dtype)
            parts = None  # the exps are not needed again
        return loss, (hidden, weight, bias, targets, weights, parts, sums, target_rows, products)

    def backward(self, saved, dloss):
        hidden, weight, bias, targets, weights, parts, sums, target_rows, products = saved
        scale = (weights * dloss).astype(hidden.dtype, copy=False)  # (N,)
        c = scale / sums  # (N,)
        d_hidden = products * c[:, None]  # (N, H)
        d_hidden -= scale[:, None] * target_rows
        if self.sgd_lr is not None:
            if dloss != 1:
                raise ValueError("LinearSoftmaxCE(sgd_lr=...) took its step in the forward: "
                                 "it must be the loss, seeded with 1")
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


def _right(hidden, c, with_bias):
    """The right-hand side of the weight-side product: c hidden (N, H), or [c hidden | c] (N, H + 1)."""
    if not with_bias:
        return hidden * c[:, None]
    H = hidden.shape[1]
    right = empty((hidden.shape[0], H + 1), dtype=hidden.dtype)
    xp.multiply(hidden, c[:, None], out=right[:, :H])
    right[:, H] = c
    return right


def _weight_side(lo, hi, exps, right, w_out, b_out, subtract):
    """w_out[lo:hi] = exps^T right[:, :H] and b_out[lo:hi] = exps^T right[:, H] (with a bias),
    or with ``subtract`` taken away from them.

    With few rows (N <= SMALL_N) by blocks of rows (``_few_rows_block``), so
    that each product is a small one and its block is still in cache when
    it is written or taken away.
    """
    H = w_out.shape[1]
    N = exps.shape[0]
    step = hi - lo if N > SMALL_N else _few_rows_block(N, H + 1, exps.itemsize)  # the forward's blocks
    for a in range(lo, hi, step):
        b = min(a + step, hi)
        e_t = exps[:, a - lo:b - lo].T  # (b - a, N)
        if not subtract and b_out is None:
            xp.matmul(e_t, right, out=w_out[a:b])
            continue
        both = e_t @ right  # (b - a, H or H + 1)
        if subtract:
            w_out[a:b] -= both[:, :H]
            if b_out is not None:
                b_out[a:b] -= both[:, H]
        else:
            w_out[a:b] = both[:, :H]
            b_out[a:b] = both[:, H]


def _by_parts(parts, hidden, c, w_out, b_out, subtract):
    """Tasks writing (or with ``subtract``, taking away) (c e)^T hidden into w_out (V, H) and c e
    summed over rows into b_out (V,) (None: no bias), one vocabulary part each.

    With a bias both come from one product: e^T [c hidden | c] (hi - lo, H + 1).
    """
    right = _right(hidden, c, b_out is not None)
    return [(lambda p=p: _weight_side(*p, right, w_out, b_out, subtract)) for p in parts]


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
        _, sums, picked, _, _, _ = _exp_logits(hidden[lo:hi], weight, bias, targets[lo:hi])
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


# -- the output-layer interface -----------------------------------------------------


class OutputLayer:
    """What the model asks of the layer at its top; ``OUTPUT_LAYERS`` maps names to them.

    * ``param_shapes()``: its own parameters, name -> shape, in a fixed order
      (a weight tied to another parameter is not its own);
    * ``init_params(gen, dtype, bound)``: their initial values;
    * ``loss(tape, hidden, nodes, targets, weights, sgd_lr=None, sparse=False)``:
      records the training loss ``sum_i weights[i] * -log p(targets[i] | hidden[i])``
      on ``tape`` and returns its node; hidden (N, H) is a node, ``nodes`` maps
      parameter names to nodes; with ``sgd_lr`` (only where ``fused_sgd``)
      the layer also takes the plain SGD step of its own parameters in
      place, and their nodes get no gradient; with ``sparse`` a gradient
      that is zero outside some rows may come as a ``row_grads`` form;
    * ``nll(params, hidden, targets)``: forward only, -log p(target) per row (N,);
    * ``log_probs(params, hidden)``: forward only, (N, V), formed only on request.

    ``fused_sgd``: whether ``loss`` takes ``sgd_lr``; ``tieable``: whether its
    weight can be another (V, H) parameter (``tied_to``, the encoder's).
    """

    fused_sgd = False
    tieable = False
    untied_because = ""  # why a layer that is not tieable cannot be, for its error message

    @classmethod
    def from_config(cls, config) -> "OutputLayer":
        """The layer for a ``model.ModelConfig`` (vocab_size, hidden_size, bias, tied, and the
        layer's own settings: cutoffs, div_value, head_bias); ``ValueError`` if they do not fit."""
        raise NotImplementedError

    def param_shapes(self) -> dict:
        raise NotImplementedError

    def init_params(self, gen, dtype, bound) -> dict:
        raise NotImplementedError

    def loss(self, tape, hidden, nodes, targets, weights, sgd_lr=None, sparse=False):
        raise NotImplementedError

    def nll(self, params, hidden, targets):
        raise NotImplementedError

    def log_probs(self, params, hidden):
        raise NotImplementedError


class FullSoftmax(OutputLayer):
    """Softmax over the whole vocabulary: ``decoder.weight`` (V, H) and, with ``bias``,
    ``decoder.bias`` (V,), named as word_language_model's ``nn.Linear`` decoder.
    With ``tied_to`` (a parameter's name, ``"encoder.weight"``) that (V, H)
    parameter is the weight, as word_language_model's ``--tied``: one array,
    whose gradient sums both uses.

    Training runs the fused ``LinearSoftmaxCE``, which can take the SGD step
    of the decoder inside its forward (``fused_sgd``).
    """

    fused_sgd = True
    tieable = True

    def __init__(self, vocab_size, hidden_size, bias=True, tied_to=None):
        self.vocab_size, self.hidden_size, self.bias = vocab_size, hidden_size, bias
        self.weight = tied_to or "decoder.weight"  # the name of the weight among the model's parameters

    @classmethod
    def from_config(cls, config) -> "FullSoftmax":
        if config.cutoffs:
            raise ValueError("the full softmax takes no cutoffs")
        return cls(config.vocab_size, config.hidden_size, config.bias,
                   tied_to="encoder.weight" if config.tied else None)

    def param_shapes(self) -> dict:
        shapes = {} if self.weight != "decoder.weight" else {"decoder.weight": (self.vocab_size, self.hidden_size)}
        if self.bias:
            shapes["decoder.bias"] = (self.vocab_size,)
        return shapes

    def init_params(self, gen, dtype, bound) -> dict:
        """The weight uniform in [-bound, bound] (unless tied), the bias at zero."""
        params = {}
        if self.weight == "decoder.weight":
            params["decoder.weight"] = gen.uniform(-bound, bound, (self.vocab_size, self.hidden_size)).astype(dtype)
        if self.bias:
            params["decoder.bias"] = zeros(self.vocab_size, dtype=dtype)
        return params

    def loss(self, tape, hidden, nodes, targets, weights, sgd_lr=None, sparse=False):
        return tape.apply(LinearSoftmaxCE(sgd_lr), hidden, nodes[self.weight], nodes.get("decoder.bias"),
                          targets, weights)

    def nll(self, params, hidden, targets):
        return nll_rows(hidden, params[self.weight], params.get("decoder.bias"), targets)

    def log_probs(self, params, hidden):
        return log_probs(hidden, params[self.weight], params.get("decoder.bias"))


OUTPUT_LAYERS = {"full": FullSoftmax}


def _register_cut_layers():
    """The layers that cut the vocabulary live in modules of their own, which import this one."""
    from .adaptive_softmax import AdaptiveSoftmax
    from .class_softmax import ClassSoftmax
    OUTPUT_LAYERS.update({"class": ClassSoftmax, "adaptive": AdaptiveSoftmax})


_register_cut_layers()


def make_output_layer(config) -> OutputLayer:
    """The output layer a ``model.ModelConfig`` names; ``ValueError`` if unknown, if it cannot
    be tied and ``config.tied``, or if its settings do not fit the vocabulary."""
    if config.softmax not in OUTPUT_LAYERS:
        raise ValueError(f"softmax {config.softmax!r} is not available; choose from: {', '.join(OUTPUT_LAYERS)}")
    layer = OUTPUT_LAYERS[config.softmax]
    if config.tied and not layer.tieable:
        why = f": {layer.untied_because}" if layer.untied_because else ""
        raise ValueError(f"the {config.softmax} output layer cannot tie its weights to the encoder{why}")
    return layer.from_config(config)
