"""LanguageModel: embedding -> recurrent layers -> decoder with softmax.

The forward pass records three kinds of gate on a tape (``graph.Tape``):

    ids (T, B) --Embedding--> (T*B, E|H) --[MatMul W_ih]--[BiasAdd b_ih]--RNNSequence--> ... layers
        --> states (T*B, H) --LinearSoftmaxCE (decoder, targets, weights)--> mean loss

and ``tape.backward`` returns every parameter's gradient. The computation is
a pure function of the parameters and a batch (``loss_and_grads``), so a
data-parallel trainer can wrap it with an allreduce of the gradients.

Parameters are named as in PyTorch's word_language_model, so they move to
and from ``nn.Embedding`` + ``nn.RNN`` + ``nn.Linear`` unchanged:

    encoder.weight     (V, E), or (V, H) when embed_size is None (the tutorial's U^T)
    rnn.weight_ih_l{k} (H, E) for k = 0 (absent when embed_size is None), (H, H) above
    rnn.weight_hh_l{k} (H, H)
    rnn.bias_ih_l{k}, rnn.bias_hh_l{k} (H,)      (absent with bias=False)
    decoder.weight     (V, H)                     (the tutorial's V)
    decoder.bias       (V,)                       (absent with bias=False)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np

from .backend import as_dtype, as_ids, rng, xp, zeros
from .threads import own_threads
from .cells import RNNSequence, check_bptt
from .gates import BiasAdd, Embedding, MatMul, add_rows
from .graph import Node, Tape
from .output import LinearSoftmaxCE, log_probs, nll_rows

CELLS = ("rnn",)


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    hidden_size: int
    embed_size: int | None = None
    cell: str = "rnn"
    num_layers: int = 1
    bias: bool = True
    dtype: str = "float32"

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "num_layers"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        if self.embed_size is not None and (not isinstance(self.embed_size, (int, np.integer)) or self.embed_size < 1):
            raise ValueError(f"embed_size must be a positive integer or None, not {self.embed_size!r}")
        if self.cell not in CELLS:
            raise ValueError(f"cell {self.cell!r} is not available; choose from: {', '.join(CELLS)}")
        as_dtype(self.dtype)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)

    def param_shapes(self) -> dict[str, tuple]:
        """Every parameter's name and shape, in a fixed order."""
        V, H, E = self.vocab_size, self.hidden_size, self.embed_size
        shapes = {"encoder.weight": (V, E if E is not None else H)}
        for k in range(self.num_layers):
            if k > 0 or E is not None:
                shapes[f"rnn.weight_ih_l{k}"] = (H, E if k == 0 else H)
            shapes[f"rnn.weight_hh_l{k}"] = (H, H)
            if self.bias:
                shapes[f"rnn.bias_ih_l{k}"] = (H,)
                shapes[f"rnn.bias_hh_l{k}"] = (H,)
        shapes["decoder.weight"] = (V, H)
        if self.bias:
            shapes["decoder.bias"] = (V,)
        return shapes


def init_params(config: ModelConfig, seed=0) -> dict[str, np.ndarray]:
    """Uniform initialisation.

    Without an embedding layer the tutorial's rule (+-sqrt(1/n), n the
    incoming connections: V for the encoder, H for the rest); with one,
    word_language_model's (+-0.1 for encoder and decoder, +-1/sqrt(H) in
    the recurrence as nn.RNN does). Biases of the decoder start at zero.
    """
    gen = rng(seed)
    dtype = as_dtype(config.dtype)
    H = config.hidden_size
    params = {}
    for name, shape in config.param_shapes().items():
        if name == "decoder.bias":
            params[name] = zeros(shape, dtype=dtype)
            continue
        if name.startswith("rnn."):
            bound = 1.0 / np.sqrt(H)
        elif config.embed_size is None:
            bound = np.sqrt(1.0 / (config.vocab_size if name == "encoder.weight" else H))
        else:
            bound = 0.1
        params[name] = gen.uniform(-bound, bound, shape).astype(dtype)
    return params


class LossAndGrads(NamedTuple):
    loss: float  # mean cross-entropy in nats over the unmasked targets
    grads: dict  # same keys and shapes as params
    hidden: np.ndarray  # final hidden state (num_layers, B, H), to carry into the next call


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


def _initial_hidden(config, batch, hidden, dtype):
    shape = (config.num_layers, batch, config.hidden_size)
    if hidden is None:
        return zeros(shape, dtype=dtype)
    hidden = xp.asarray(hidden, dtype=dtype)
    if hidden.shape != shape:
        raise ValueError(f"hidden must be shaped {shape}, not {hidden.shape}")
    return hidden


def _check_ids(ids, vocab_size, what):
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"{what} must lie in [0, {vocab_size}), found {ids.min()}..{ids.max()}")


def loss_and_grads(params, config: ModelConfig, inputs, targets, *, mask=None, bptt="full",
                   truncate=None, hidden=None, reduction="mean") -> LossAndGrads:
    """Cross-entropy of ``targets`` given ``inputs`` and its gradient, by BPTT.

    inputs, targets: token ids (T, B); mask: (T, B), nonzero where a target
    counts; hidden: (num_layers, B, H) initial state or None for zeros.
    ``bptt`` is "full", "chunk" or "window" with ``truncate`` steps (see
    ``cells.RNNSequence``). ``reduction`` "mean" averages over the unmasked
    targets, "sum" adds them (the tutorial's ``bptt``). A pure function of its
    arguments.
    """
    with own_threads():
        run = _run(params, config, inputs, targets, mask, bptt, truncate, hidden, reduction, LinearSoftmaxCE())
        grads = {name: node.grad if node.grad is not None else xp.zeros_like(node.value)
                 for name, node in run.nodes.items()}
    return LossAndGrads(float(run.loss.value), grads, run.final)


def sgd_step(params, config: ModelConfig, inputs, targets, lr, *, mask=None, bptt="full",
             truncate=None, hidden=None, reduction="mean") -> tuple[float, np.ndarray]:
    """``loss_and_grads`` then ``params[k] -= lr * grads[k]`` for every k, fused; updates in place.

    Returns (loss, final hidden). The same step as plain SGD on the gradients
    (checked in the tests), taken without forming the large gradients: the
    decoder steps a vocabulary part per thread, in the same call to the
    threads as its forward, once the softmax's row sums are known
    (``LinearSoftmaxCE(sgd_lr=lr)``), and the encoder only at the rows of
    the batch's input tokens.
    """
    if not (isinstance(lr, (int, float, np.integer, np.floating)) and np.isfinite(lr) and lr >= 0):
        raise ValueError(f"learning rate must be a finite number >= 0, not {lr!r}")
    with own_threads():
        run = _run(params, config, inputs, targets, mask, bptt, truncate, hidden, reduction,
                   LinearSoftmaxCE(sgd_lr=float(lr)))
        for name, node in run.nodes.items():
            if node.grad is None:  # the decoder (stepped by its gate), or no steps
                continue
            if name == "encoder.weight":  # the gathered rows' gradient, one row per input token
                add_rows(params[name], run.ids, node.grad * -lr)
            else:
                params[name] -= lr * node.grad
    return float(run.loss.value), run.final


class _Run(NamedTuple):
    nodes: dict  # parameter name -> Node, its .grad filled by the backward
    loss: Node
    final: np.ndarray  # (num_layers, B, H)
    ids: np.ndarray  # the input ids (T*B,)


def _run(params, config, inputs, targets, mask, bptt, truncate, hidden, reduction, decoder):
    """The forward pass on a tape, ending in the ``decoder`` gate (a ``LinearSoftmaxCE``), and the backward.

    With ``decoder.sgd_lr`` set (``sgd_step``) the encoder's node holds the
    gathered rows (T*B, E|H) instead of the table, so that its gradient stays
    one row per input token.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', not {reduction!r}")
    check_bptt(bptt, truncate)
    if bptt == "window" and config.num_layers > 1:
        raise ValueError("window BPTT is the tutorial's one-layer semantics; use chunk or full "
                         "with several layers")
    inputs, targets, mask = _as_batch(inputs, targets, mask)
    _check_ids(inputs, config.vocab_size, "inputs")
    _check_ids(targets, config.vocab_size, "targets")
    dtype = params["decoder.weight"].dtype
    T, B = inputs.shape
    h0 = _initial_hidden(config, B, hidden, dtype)
    if mask is None:
        weights = xp.ones(T * B, dtype=dtype)
    else:
        weights = (xp.asarray(mask).reshape(-1) != 0).astype(dtype)
    if reduction == "mean":
        weights /= max(weights.sum(), 1)

    tape = Tape()
    nodes = {name: tape.param(value, name) for name, value in params.items()}
    ids = inputs.reshape(-1)
    if decoder.sgd_lr is None:
        x = tape.apply(Embedding(), nodes["encoder.weight"], ids)
    else:
        x = nodes["encoder.weight"] = tape.param(params["encoder.weight"][ids], "encoder rows")
    finals = []
    for k in range(config.num_layers):
        if f"rnn.weight_ih_l{k}" in nodes:
            x = tape.apply(MatMul(), x, nodes[f"rnn.weight_ih_l{k}"])
        if config.bias:
            x = tape.apply(BiasAdd(), x, nodes[f"rnn.bias_ih_l{k}"])
        x = tape.apply(RNNSequence(T, bptt, truncate), x, h0[k], nodes[f"rnn.weight_hh_l{k}"],
                       nodes.get(f"rnn.bias_hh_l{k}"))
        finals.append(x.value[(T - 1) * B:].copy() if T else h0[k])
    loss = tape.apply(decoder, x, nodes["decoder.weight"], nodes.get("decoder.bias"),
                      targets.reshape(-1), weights)
    if T:
        tape.backward(loss)
    return _Run(nodes, loss, xp.stack(finals), ids)


def top_states(params, config: ModelConfig, inputs, hidden=None):
    """Forward only: the top layer's states (T*B, H) and the final hidden (num_layers, B, H)."""
    T, B = inputs.shape
    dtype = params["decoder.weight"].dtype
    h0 = _initial_hidden(config, B, hidden, dtype)
    x = params["encoder.weight"][inputs.reshape(-1)]
    finals = []
    for k in range(config.num_layers):
        if f"rnn.weight_ih_l{k}" in params:
            x = x @ params[f"rnn.weight_ih_l{k}"].T
        if config.bias:
            x = x + params[f"rnn.bias_ih_l{k}"]
        x, _ = RNNSequence(T).forward(x, h0[k], params[f"rnn.weight_hh_l{k}"],
                                      params.get(f"rnn.bias_hh_l{k}"))
        finals.append(x[(T - 1) * B:].copy() if T else h0[k])
    return x, xp.stack(finals)


class LanguageModel:
    """A recurrent language model; see the module docstring for the parameters."""

    def __init__(self, vocab_size, hidden_size, *, embed_size=None, cell="rnn", num_layers=1,
                 bias=True, dtype="float32", seed=0):
        self.config = ModelConfig(vocab_size, hidden_size, embed_size, cell, num_layers, bias,
                                  as_dtype(dtype).name)
        self.params = init_params(self.config, seed)

    @classmethod
    def from_config(cls, config: ModelConfig | dict, params=None, seed=0) -> "LanguageModel":
        config = config if isinstance(config, ModelConfig) else ModelConfig.from_dict(config)
        model = cls.__new__(cls)
        model.config = config
        if params is None:
            model.params = init_params(config, seed)
        else:
            model.params = {}
            model.load_params(params)
        return model

    def load_params(self, params):
        """Replace the parameters, checking names and shapes."""
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

    @property
    def vocab_size(self):
        return self.config.vocab_size

    @property
    def hidden_size(self):
        return self.config.hidden_size

    def init_hidden(self, batch_size):
        """Zeros (num_layers, batch_size, H)."""
        return zeros((self.config.num_layers, batch_size, self.config.hidden_size),
                     dtype=as_dtype(self.config.dtype))

    def loss_and_grads(self, inputs, targets, *, mask=None, bptt="full", truncate=None,
                       hidden=None, reduction="mean") -> LossAndGrads:
        """See the module-level ``loss_and_grads``."""
        return loss_and_grads(self.params, self.config, inputs, targets, mask=mask, bptt=bptt,
                              truncate=truncate, hidden=hidden, reduction=reduction)

    def sgd_step(self, inputs, targets, lr, *, mask=None, bptt="full", truncate=None, hidden=None,
                 reduction="mean") -> tuple[float, np.ndarray]:
        """One plain SGD step in place; see the module-level ``sgd_step``. Returns (loss, final hidden)."""
        return sgd_step(self.params, self.config, inputs, targets, lr, mask=mask, bptt=bptt,
                        truncate=truncate, hidden=hidden, reduction=reduction)

    def log_probs(self, inputs, *, hidden=None):
        """Forward only: log-probabilities (T, B, V) of the next token and the final hidden."""
        inputs, _, _ = _as_batch(inputs)
        _check_ids(inputs, self.config.vocab_size, "inputs")
        states, final = top_states(self.params, self.config, inputs, hidden)
        logp = log_probs(states, self.params["decoder.weight"], self.params.get("decoder.bias"))
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
            nll = nll_rows(states, self.params["decoder.weight"], self.params.get("decoder.bias"),
                           targets.reshape(-1))
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
                f"bias={c.bias}, dtype={c.dtype!r})")
