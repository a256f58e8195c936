"""LanguageModel: embedding -> recurrent layers -> output layer.

The forward pass records gates on a tape (``graph.Tape``):

    ids (T, B) --Embedding--> (T*B, E|H) --[MatMul W_ih]--[BiasAdd b_ih]--cell's sequence gate--> ... layers
        --> states (T*B, H) --output layer's loss gate (targets, weights)--> loss

and ``tape.backward`` returns every parameter's gradient. The cell comes from
the registry ``cells.CELLS`` and the output layer from ``output.OUTPUT_LAYERS``:
nothing here knows which cell or output layer it runs. The same layer loop
(``_forward``) serves training (parameters as nodes whose gradients are
wanted) and evaluation (parameters as constants: nothing is recorded).

``loss_and_grads`` is a pure function of the parameters and a batch, so a
data-parallel trainer can wrap it with an allreduce of the gradients (with
``reduction="sum"`` and its own divisor: the global count of targets).
``sgd_step`` is the fused plain SGD step and ``clipped_sgd_step`` the plain
SGD step after clipping, with sparse gradients where they are zero outside a
few rows: optimisations for one process.

Parameters are named as in PyTorch's word_language_model, so they move to
and from ``nn.Embedding`` + ``nn.RNN`` + ``nn.Linear`` unchanged:

    encoder.weight     (V, E), or (V, G*H) when embed_size is None (the tutorial's U^T)
    rnn.weight_ih_l{k} (G*H, E) for k = 0 (absent when embed_size is None), (G*H, H) above
    rnn.weight_hh_l{k} (G*H, H)
    rnn.bias_ih_l{k}, rnn.bias_hh_l{k} (G*H,)    (absent with bias=False)
    decoder.weight     (V, H)                     (the tutorial's V)
    decoder.bias       (V,)                       (absent with bias=False)

with G the cell's number of gate blocks (1 for the tanh RNN).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np

from .backend import DTYPES, as_dtype, as_ids, rng, xp
from .cells import CELLS, Cell, get_cell
from . import row_grads
from .gates import BiasAdd, Dropout, Embedding, MatMul, add_rows, dropout_mask, sum_rows
from .graph import Tape
from .output import OUTPUT_LAYERS, OutputLayer, make_output_layer
from .threads import own_threads


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    hidden_size: int
    embed_size: int | None = None
    cell: str = "rnn"
    num_layers: int = 1
    bias: bool = True
    dtype: str = "float32"
    softmax: str = "full"
    dropout: float = 0.0  # inverted dropout on the embedding output, between layers and before the output layer
    tied: bool = False  # the output layer's weight is encoder.weight (needs an encoder row of H entries)
    cutoffs: tuple[int, ...] = ()  # where the class and adaptive layers cut the ids: 0 < c1 < ... < V
    div_value: float = 4.0  # the adaptive layer's shrink of each tail cluster's projection
    head_bias: bool = False  # the adaptive layer's head has a bias

    def __post_init__(self):
        if not isinstance(self.cutoffs, tuple):  # a list from JSON
            object.__setattr__(self, "cutoffs", tuple(self.cutoffs))
        for name in ("vocab_size", "hidden_size", "num_layers"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        if self.embed_size is not None and (not isinstance(self.embed_size, (int, np.integer)) or self.embed_size < 1):
            raise ValueError(f"embed_size must be a positive integer or None, not {self.embed_size!r}")
        get_cell(self.cell)
        if self.softmax not in OUTPUT_LAYERS:
            raise ValueError(f"softmax {self.softmax!r} is not available; choose from: {', '.join(OUTPUT_LAYERS)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {self.dtype!r}")
        if not (isinstance(self.dropout, (int, float, np.floating)) and 0.0 <= self.dropout < 1.0):
            raise ValueError(f"dropout must be a number in [0, 1), not {self.dropout!r}")
        if self.tied and self.encoder_width() != self.hidden_size:
            raise ValueError(f"tied weights need an embedding of the hidden size ({self.hidden_size}), "
                             f"not {self.encoder_width()}")
        self.output_layer()  # an output layer that cannot be tied says so here

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)

    @property
    def cell_type(self) -> Cell:
        """The cell's registry entry."""
        return CELLS[self.cell]

    def output_layer(self) -> OutputLayer:
        """The output layer this configuration names (``ValueError`` if its settings do not fit)."""
        return make_output_layer(self)

    def encoder_width(self) -> int:
        """Entries of an encoder row: the embedding size, or without an embedding layer the
        cell's G*H pre-activations (the tutorial's U x)."""
        return self.embed_size if self.embed_size is not None else self.cell_type.gates * self.hidden_size

    def param_shapes(self) -> dict[str, tuple]:
        """Every parameter's name and shape, in a fixed order: encoder, layers, output layer."""
        cell, H, E = self.cell_type, self.hidden_size, self.embed_size
        shapes = {"encoder.weight": (self.vocab_size, self.encoder_width())}
        for k in range(self.num_layers):
            shapes.update(cell.param_shapes(k, E if k == 0 else H, H, self.bias))
        shapes.update(self.output_layer().param_shapes())
        return shapes


def init_params(config: ModelConfig, seed=0) -> dict[str, np.ndarray]:
    """Uniform initialisation.

    Without an embedding layer the tutorial's rule (+-sqrt(1/n), n the
    incoming connections: V for the encoder, H for the rest); with one,
    word_language_model's (+-0.1 for encoder and decoder, +-1/sqrt(H) in
    the recurrence as nn.RNN does). The output layer's biases start at zero.
    Drawn in the order of ``param_shapes``.
    """
    gen = rng(seed)
    dtype = as_dtype(config.dtype)
    H = config.hidden_size
    tutorial = config.embed_size is None
    encoder_bound = np.sqrt(1.0 / config.vocab_size) if tutorial else 0.1
    shapes = config.param_shapes()
    params = {"encoder.weight": gen.uniform(-encoder_bound, encoder_bound, shapes["encoder.weight"]).astype(dtype)}
    for name, shape in shapes.items():
        if name.startswith("rnn."):
            params[name] = gen.uniform(-1.0 / np.sqrt(H), 1.0 / np.sqrt(H), shape).astype(dtype)
    params.update(config.output_layer().init_params(gen, dtype, np.sqrt(1.0 / H) if tutorial else 0.1))
    return params


class LossAndGrads(NamedTuple):
    loss: float  # mean cross-entropy in nats over the unmasked targets (or their sum)
    grads: dict  # same keys and shapes as params
    hidden: object  # the final carried state, to carry into the next call: (num_layers, B, H) for the tanh RNN


def _as_batch(inputs, targets=None, mask=None):
    """(T,) or (T, B) ids -> (T, B); one sentence is a batch of one."""
    inputs = as_ids(inputs)
    if inputs.ndim == 1:
        inputs = inputs[:, None]
        targets = None if targets is None else as_ids(targets)[:, None]
        mask = None if mask is None else xp.asarray(mask)[:, None]
    if inputs.ndim != 2:
        raise ValueError(f"inputs must be shaped (T, B), not {inputs.shape}")
    if targets is not None:
        targets = as_ids(targets)
        if targets.shape != inputs.shape:
            raise ValueError(f"targets {targets.shape} and inputs {inputs.shape} differ in shape")
    if mask is not None and xp.shape(mask) != inputs.shape:
        raise ValueError(f"mask {xp.shape(mask)} and inputs {inputs.shape} differ in shape")
    return inputs, targets, mask


def _check_ids(ids, vocab_size, what):
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"{what} must lie in [0, {vocab_size}), found {ids.min()}..{ids.max()}")


def _start_state(config, batch, hidden, dtype) -> tuple:
    """The carried state as given (None: zeros) -> the cell's parts, each (num_layers, B, H)."""
    return config.cell_type.parts(hidden, config.num_layers, batch, config.hidden_size, dtype)


def _apply(tape, gate, *inputs):
    """Record ``gate`` on ``tape`` and return its output node; with no tape (forward only) just
    run its forward and return its output array."""
    if tape is None:
        return gate.forward(*inputs)[0]
    return tape.apply(gate, *inputs)


def _forward(tape, nodes, config, x, state, T, bptt="full", truncate=None, masks=None):
    """The recurrent layers, written once: x (T*B, E|G*H) -> (top states (T*B, H), final parts).

    With a ``tape``, ``nodes`` maps parameter names to nodes and x and the
    top states are nodes; with ``tape`` None (forward only) they are the
    parameters' arrays and arrays, and nothing is recorded. ``state`` is the
    cell's parts, each (num_layers, B, H). The final parts are (num_layers, B, H) each.
    ``masks``: None, or the dropout masks (``_dropout_masks``): mask k on
    layer k's input, the last on the top layer's output.
    """
    cell = config.cell_type
    finals = []
    for k in range(config.num_layers):
        if masks is not None:
            x = _apply(tape, Dropout(), x, masks[k])
        if f"rnn.weight_ih_l{k}" in nodes:
            x = _apply(tape, MatMul(), x, nodes[f"rnn.weight_ih_l{k}"])
        if config.bias:
            x = _apply(tape, BiasAdd(), x, nodes[f"rnn.bias_ih_l{k}"])
        sequence = cell.sequence(T, bptt, truncate)
        x = _apply(tape, sequence, x, *(part[k] for part in state), nodes[f"rnn.weight_hh_l{k}"],
                   nodes.get(f"rnn.bias_hh_l{k}"))
        finals.append(sequence.final)
    if masks is not None:
        x = _apply(tape, Dropout(), x, masks[-1])
    return x, tuple(xp.stack(layers) for layers in zip(*finals))


def _dropout_masks(config, rows, dtype, gen):
    """The masks of one training pass, drawn from ``gen`` in a fixed order: the embedding output
    (rows, E|G*H), each layer's output below the top (rows, H), the top layer's output (rows, H).
    None without dropout."""
    if not config.dropout:
        return None
    if gen is None:
        gen = rng(None)
    widths = [config.encoder_width()] + [config.hidden_size] * config.num_layers
    return [dropout_mask(gen, (rows, width), config.dropout, dtype) for width in widths]


def loss_and_grads(params, config: ModelConfig, inputs, targets, *, mask=None, bptt="full",
                   truncate=None, hidden=None, reduction="mean", dropout_rng=None) -> LossAndGrads:
    """Cross-entropy of ``targets`` given ``inputs`` and its gradient, by BPTT.

    inputs, targets: token ids (T, B); mask: (T, B), nonzero where a target
    counts; hidden: the carried state ((num_layers, B, H) for the tanh RNN)
    or None for zeros. ``bptt`` is "full", "chunk" or "window" with
    ``truncate`` steps (see ``cells.RNNSequence``). ``reduction`` "mean"
    averages over the unmasked targets, "sum" adds them (the tutorial's
    ``bptt``). With ``config.dropout`` the masks are drawn from
    ``dropout_rng`` (a ``np.random.Generator``; None: a fresh, unseeded one).
    A pure function of its arguments.
    """
    with own_threads():
        run = _run_tape(params, config, inputs, targets, mask, bptt, truncate, hidden, reduction, dropout_rng)
        grads = {name: node.grad if node.grad is not None else xp.zeros_like(node.value)
                 for name, node in run.nodes.items()}
    return LossAndGrads(run.loss, grads, run.final)


def sgd_step(params, config: ModelConfig, inputs, targets, lr, *, mask=None, bptt="full",
             truncate=None, hidden=None, reduction="mean", dropout_rng=None) -> tuple[float, object]:
    """``loss_and_grads`` then ``params[k] -= lr * grads[k]`` for every k, fused; updates in place.

    Returns (loss, final hidden). The same step as plain SGD on the gradients
    (checked in the tests), taken without forming the large gradients: the
    output layer steps its own parameters inside its forward (for the full
    softmax, a vocabulary part per thread, once the softmax's row sums are
    known), and the encoder only at the rows of the batch's input tokens.
    Needs an output layer with ``fused_sgd``.
    """
    _check_lr(lr)
    with own_threads():
        run = _run_tape(params, config, inputs, targets, mask, bptt, truncate, hidden, reduction, dropout_rng,
                        sgd_lr=float(lr))
        for name, node in run.nodes.items():
            if node.grad is not None:  # None: stepped by the output layer, unused, or no steps
                params[name] -= lr * node.grad
        if run.encoder_rows.grad is not None:  # the gathered rows' gradient, one row per input token
            add_rows(params["encoder.weight"], run.ids, run.encoder_rows.grad * -lr)
    return run.loss, run.final


class ClippedStep(NamedTuple):
    loss: float  # as loss_and_grads gives it
    hidden: object  # the final carried state
    norm: float  # the global norm of the gradient (times grad_scale) before clipping


def clipped_sgd_step(params, config: ModelConfig, inputs, targets, lr, max_norm, *, grad_scale=1.0, mask=None,
                     bptt="full", truncate=None, hidden=None, reduction="mean", dropout_rng=None) -> ClippedStep:
    """``loss_and_grads``, the gradients times ``grad_scale`` clipped to the global norm
    ``max_norm`` (0: not clipped), then plain SGD at ``lr``; updates in place.

    The step of ``optim.clip_grad_norm`` and ``optim.SGD`` on the gradients
    of ``loss_and_grads`` (checked in the tests), taken without forming the
    gradients that are zero outside a few rows: the encoder's (the batch's
    input tokens) and the class layer's word table's (the words of the
    batch's target classes) stay sparse (``row_grads``), so neither their
    norm nor their step walks the whole vocabulary. Works with every output
    layer.
    """
    _check_lr(lr)
    with own_threads():
        run = _run_tape(params, config, inputs, targets, mask, bptt, truncate, hidden, reduction, dropout_rng,
                        sparse=True)
        grads = {name: node.grad for name, node in run.nodes.items() if node.grad is not None}
        table = _encoder_grad(params["encoder.weight"].shape, run, grads.get("encoder.weight"))
        if table is not None:
            grads["encoder.weight"] = table
        norm = row_grads.clipped_sgd_step(params, grads, float(lr), max_norm, grad_scale)
    return ClippedStep(run.loss, run.final, norm)


def _encoder_grad(shape, run, from_output):
    """The encoder table's gradient: the gathered rows' (one per input token) summed per distinct
    token, sparse; with an output layer tied to the table (its gradient ``from_output``), the
    sum of both, dense."""
    if run.encoder_rows.grad is None:
        return from_output
    ids, rows = sum_rows(run.ids, run.encoder_rows.grad)
    if from_output is None:
        return row_grads.RowsAt(shape, ids, rows)
    table = row_grads.dense(from_output)
    table[ids] += rows
    return table


def _check_lr(lr):
    if not (isinstance(lr, (int, float, np.integer, np.floating)) and np.isfinite(lr) and lr >= 0):
        raise ValueError(f"learning rate must be a finite number >= 0, not {lr!r}")


class _TapeRun(NamedTuple):
    nodes: dict  # parameter name -> Node, its .grad filled by the backward
    loss: float
    final: object  # the final carried state, as the model hands it out
    ids: np.ndarray  # the input ids (T*B,)
    encoder_rows: object  # with sgd_lr or sparse: the node of the gathered encoder rows (T*B, E|G*H), else None


def _run_tape(params, config, inputs, targets, mask, bptt, truncate, hidden, reduction, dropout_rng=None,
              sgd_lr=None, sparse=False):
    """The forward pass on a tape, ending in the output layer's loss, and the backward.

    With ``sgd_lr`` (``sgd_step``) the output layer steps its parameters in
    its forward. With ``sgd_lr`` or ``sparse`` (``clipped_sgd_step``) the
    recurrence reads the encoder's rows from a node of their own, the
    gathered rows (T*B, E|G*H), so that their gradient stays one row per
    input token; the table's node then gets a gradient only from an output
    layer tied to it that does not step it. With ``sparse`` the output layer
    may give gradients in a ``row_grads`` form.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', not {reduction!r}")
    config.cell_type.check_bptt(bptt, truncate, config.num_layers)
    output = config.output_layer()
    if sgd_lr is not None and not output.fused_sgd:
        raise ValueError(f"the {config.softmax} output layer has no fused SGD step; use loss_and_grads")
    inputs, targets, mask = _as_batch(inputs, targets, mask)
    _check_ids(inputs, config.vocab_size, "inputs")
    _check_ids(targets, config.vocab_size, "targets")
    dtype = params["encoder.weight"].dtype
    T, B = inputs.shape
    state = _start_state(config, B, hidden, dtype)
    if mask is None:
        weights = xp.ones(T * B, dtype=dtype)
    else:
        weights = (xp.asarray(mask).reshape(-1) != 0).astype(dtype)
    if reduction == "mean":
        weights /= max(weights.sum(), 1)

    tape = Tape()
    nodes = {name: tape.param(value, name) for name, value in params.items()}
    ids = inputs.reshape(-1)
    rows = None
    if sgd_lr is None and not sparse:
        x = tape.apply(Embedding(), nodes["encoder.weight"], ids)
    else:
        x = rows = tape.param(params["encoder.weight"][ids], "encoder rows")
    masks = _dropout_masks(config, T * B, dtype, dropout_rng)
    top, final = _forward(tape, nodes, config, x, state, T, bptt, truncate, masks)
    loss = output.loss(tape, top, nodes, targets.reshape(-1), weights, sgd_lr, sparse)
    if T:
        tape.backward(loss)
    return _TapeRun(nodes, float(loss.value), config.cell_type.hidden(final), ids, rows)


def top_states(params, config: ModelConfig, inputs, hidden=None):
    """Forward only: the top layer's states (T*B, H) and the final carried state."""
    T, B = inputs.shape
    state = _start_state(config, B, hidden, params["encoder.weight"].dtype)
    x = params["encoder.weight"][inputs.reshape(-1)]
    top, final = _forward(None, params, config, x, state, T)
    return top, config.cell_type.hidden(final)


class LanguageModel:
    """A recurrent language model; see the module docstring for the parameters."""

    def __init__(self, vocab_size, hidden_size, *, embed_size=None, cell="rnn", num_layers=1,
                 bias=True, dtype="float32", softmax="full", dropout=0.0, tied=False, cutoffs=(),
                 div_value=4.0, head_bias=False, seed=0):
        self.config = ModelConfig(vocab_size, hidden_size, embed_size, cell, num_layers, bias,
                                  as_dtype(dtype).name, softmax, dropout, tied, tuple(cutoffs),
                                  div_value, head_bias)
        self.params = init_params(self.config, seed)
        self.output = self.config.output_layer()

    @classmethod
    def from_config(cls, config: ModelConfig | dict, params=None, seed=0) -> "LanguageModel":
        config = config if isinstance(config, ModelConfig) else ModelConfig.from_dict(config)
        model = cls.__new__(cls)
        model.config = config
        model.output = config.output_layer()
        if params is None:
            model.params = init_params(config, seed)
        else:
            model.params = {}
            model.load_params(params)
        return model

    def load_params(self, params):
        """Replace the parameters, checking names and shapes.

        With tied weights, a ``decoder.weight`` equal to ``encoder.weight`` (the
        state dict of a tied PyTorch model holds both) is accepted and dropped.
        """
        params = dict(params)
        if self.config.tied and "decoder.weight" in params:
            decoder = params.pop("decoder.weight")
            if not np.array_equal(decoder, params.get("encoder.weight")):
                raise ValueError("the weights are tied, but decoder.weight differs from encoder.weight")
        expected = self.config.param_shapes()
        if set(params) != set(expected):
            missing = sorted(set(expected) - set(params))
            extra = sorted(set(params) - set(expected))
            raise ValueError(f"parameters do not match the model: missing {missing}, unexpected {extra}")
        dtype = as_dtype(self.config.dtype)
        for name, shape in expected.items():
            if xp.shape(params[name]) != shape:
                raise ValueError(f"parameter {name} has shape {xp.shape(params[name])}, "
                                 f"the model needs {shape}")
        for name in expected:
            self.params[name] = xp.ascontiguousarray(params[name], dtype=dtype)

    def state_dict(self) -> dict:
        """The parameters under PyTorch's names, ready for ``torch.nn.Module.load_state_dict`` (as
        tensors); with tied weights ``decoder.weight`` is ``encoder.weight`` itself, as in PyTorch."""
        params = dict(self.params)
        if self.config.tied:
            params["decoder.weight"] = params["encoder.weight"]
        return params

    @property
    def vocab_size(self):
        return self.config.vocab_size

    @property
    def hidden_size(self):
        return self.config.hidden_size

    def init_hidden(self, batch_size):
        """The zero carried state: (num_layers, batch_size, H) for the tanh RNN, one such array per part."""
        c = self.config
        return c.cell_type.hidden(c.cell_type.zero_state(c.num_layers, batch_size, c.hidden_size,
                                                         as_dtype(c.dtype)))

    def loss_and_grads(self, inputs, targets, *, mask=None, bptt="full", truncate=None,
                       hidden=None, reduction="mean", dropout_rng=None) -> LossAndGrads:
        """See the module-level ``loss_and_grads``."""
        return loss_and_grads(self.params, self.config, inputs, targets, mask=mask, bptt=bptt,
                              truncate=truncate, hidden=hidden, reduction=reduction, dropout_rng=dropout_rng)

    def sgd_step(self, inputs, targets, lr, *, mask=None, bptt="full", truncate=None, hidden=None,
                 reduction="mean", dropout_rng=None) -> tuple[float, object]:
        """One plain SGD step in place; see the module-level ``sgd_step``. Returns (loss, final hidden)."""
        return sgd_step(self.params, self.config, inputs, targets, lr, mask=mask, bptt=bptt,
                        truncate=truncate, hidden=hidden, reduction=reduction, dropout_rng=dropout_rng)

    def clipped_sgd_step(self, inputs, targets, lr, max_norm, *, grad_scale=1.0, mask=None, bptt="full",
                         truncate=None, hidden=None, reduction="mean", dropout_rng=None) -> ClippedStep:
        """One clipped plain SGD step in place; see the module-level ``clipped_sgd_step``."""
        return clipped_sgd_step(self.params, self.config, inputs, targets, lr, max_norm, grad_scale=grad_scale,
                                mask=mask, bptt=bptt, truncate=truncate, hidden=hidden, reduction=reduction,
                                dropout_rng=dropout_rng)

    def log_probs(self, inputs, *, hidden=None):
        """Forward only: log-probabilities (T, B, V) of the next token and the final hidden."""
        inputs, _, _ = _as_batch(inputs)
        _check_ids(inputs, self.config.vocab_size, "inputs")
        states, final = top_states(self.params, self.config, inputs, hidden)
        logp = self.output.log_probs(self.params, states)
        return logp.reshape(*inputs.shape, self.config.vocab_size), final

    def nll(self, inputs, targets, *, hidden=None):
        """Forward only: -log p(target) per position (T, B), and the final hidden.

        Never holds more than one block of logits, so it serves long evaluations.
        """
        inputs, targets, _ = _as_batch(inputs, targets)
        _check_ids(inputs, self.config.vocab_size, "inputs")
        _check_ids(targets, self.config.vocab_size, "targets")
        with own_threads():
            states, final = top_states(self.params, self.config, inputs, hidden)
            nll = self.output.nll(self.params, states, targets.reshape(-1))
        return nll.reshape(inputs.shape), final

    def evaluate(self, inputs, targets, *, mask=None, hidden=None):
        """Forward only: (sum of -log p over unmasked targets, their count, final hidden)."""
        nll, final = self.nll(inputs, targets, hidden=hidden)
        if mask is None:
            return float(nll.sum(dtype=np.float64)), int(nll.size), final
        keep = xp.asarray(mask).reshape(nll.shape) != 0
        return float(nll[keep].sum(dtype=np.float64)), int(keep.sum()), final

    def step(self, ids, hidden=None):
        """One step of generation: ids (B,) -> log-probabilities (B, V), new hidden."""
        logp, hidden = self.log_probs(as_ids(ids)[None, :], hidden=hidden)
        return logp[0], hidden

    def num_params(self):
        return int(sum(p.size for p in self.params.values()))

    def __repr__(self):
        c = self.config
        return (f"LanguageModel(vocab_size={c.vocab_size}, hidden_size={c.hidden_size}, "
                f"embed_size={c.embed_size}, cell={c.cell!r}, num_layers={c.num_layers}, "
                f"bias={c.bias}, dtype={c.dtype!r}, softmax={c.softmax!r}, dropout={c.dropout}, tied={c.tied}"
                + (f", cutoffs={list(c.cutoffs)}, div_value={c.div_value}, head_bias={c.head_bias}"
                   if c.cutoffs else "") + ")")
