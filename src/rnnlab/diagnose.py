"""Diagnostics of a trained recurrent model: how far back its gradients reach, and why.

Three measures, over a sample of token ids (T, B) fed to the model as in
evaluation (no dropout):

* **gradient by lag**: for sampled positions t and every batch row, the
  norm of d loss_t / d h_{t-k} for k = 0 .. K, where loss_t is the
  cross-entropy of the one target ids[t + 1]; averaged over positions and
  rows, and divided by its value at k = 0. For the LSTM also the memory
  cell's path, d loss_t / d c_{t-k}, divided by the same h value at k = 0.
  Every layer is measured. Each h^l_s and c_s is taken as a node of the
  unrolled network and its gradient sums every path from it to loss_t:
  through the later steps of its own layer, through the layers above, and
  for c_s also through its own step's h_s = o_s tanh(c_s) (as PyTorch's
  autograd gives it for the c of an ``LSTMCell``).
  The **effective memory** is the largest lag whose ratio is above a
  threshold (1e-3 by default).
* the largest **singular values** of each ``weight_hh`` (G*H, H): the whole
  matrix and, for gated cells, each gate's (H, H) block.
* the share of **saturated** units: |tanh| > 0.99 for tanh outputs,
  sigmoid < 0.01 or > 0.99 for gates, per activation of the cell.

The gradients come from the model's own gates and their backward: the
window of K + 1 steps before each position is run on a tape as a chain of
one-step gates (``StateStep``, the cell's own sequence gate over one step)
whose every state is a node, the loss is the output layer's own loss at the
window's last step only, and after ``Tape.backward`` each state node holds
d loss_t / d state. All sampled windows go through the tape at once, side
by side in the batch (rows do not mix in a recurrent network), so the cost
is one backward of K + 1 steps:

    ids (T, B):   0 ........ t-K-1 | t-K ........ t | t+1          (one window per sampled t)
                  forward only      | on the tape    | target of loss_t
                  -> start state    | state nodes, lag K .. 0
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from .backend import as_ids, xp, zeros
from .cells import Cell
from .gates import BiasAdd, Gate, MatMul
from .graph import Tape
from .model import LanguageModel, ModelConfig
from .threads import own_threads

DEFAULT_MAX_LAG = 50
DEFAULT_THRESHOLD = 1e-3
DEFAULT_POSITIONS = 8
TANH_SATURATED = 0.99  # |tanh| above this is saturated
SIGMOID_SATURATED = 0.01  # a sigmoid within this of 0 or 1 is saturated

# Each cell's gate blocks, in the order of the rows of its weights (cells.py's module docstring).
GATE_BLOCKS = {"rnn": ("h",), "lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n")}
# Each cell's activations that can saturate, with their kind.
ACTIVATIONS = {
    "rnn": (("h", "tanh"),),
    "lstm": (("i", "sigmoid"), ("f", "sigmoid"), ("g", "tanh"), ("o", "sigmoid"), ("tanh(c)", "tanh")),
    "gru": (("r", "sigmoid"), ("z", "sigmoid"), ("n", "tanh")),
}


# -- the gates of the chain ----------------------------------------------------------


class StateStep(Gate):
    """One step of a cell with its whole carried state as one array, so that each step's state is a node:
    xin (B, G*H), state (P, B, H), w_hh (G*H, H), b_hh (G*H,) or None -> the next state (P, B, H).

    P is the number of state parts (1: h; 2 for the LSTM: h, c). Forward and
    backward are the cell's own sequence gate over one step; the gradient at
    the next state goes into that gate's backward as its ``final_grad``.
    """

    def __init__(self, cell: Cell):
        self.sequence = cell.sequence(1)

    def forward(self, xin, state, w_hh, b_hh):
        _, saved = self.sequence.forward(xin, *state, w_hh, b_hh)
        return xp.stack(self.sequence.final), saved

    def backward(self, saved, d_state):
        self.sequence.final_grad = tuple(d_state)
        no_output_grad = zeros(d_state.shape[1:], dtype=d_state.dtype)  # the output h is the state's h
        d_xin, *d_parts, d_w, d_b = self.sequence.backward(saved, no_output_grad)
        return d_xin, xp.stack(d_parts), d_w, d_b


class StatePart(Gate):
    """One part of a stacked state: state (P, B, H) -> state[part] (B, H) (part 0 is h)."""

    def __init__(self, part=0):
        self.part = part

    def forward(self, state):
        return state[self.part], state.shape

    def backward(self, shape, d_part):
        d_state = zeros(shape, dtype=d_part.dtype)
        d_state[self.part] = d_part
        return (d_state,)


# -- the forward pass over the sample -------------------------------------------------


class LayerTrace(NamedTuple):
    states: tuple  # one (T+1, B, H) array per state part: before step 0, then after each step
    activations: dict  # activation name (ACTIVATIONS) -> (T, B, H)


def _read_saved(cell_name, saved) -> LayerTrace:
    """A sequence gate's saved values -> its states and activations (the layouts of cells.py's forwards)."""
    if cell_name == "rnn":
        h0, _, states, _ = saved
        return LayerTrace((xp.concatenate([h0[None], states]),), {"h": states})
    if cell_name == "lstm":
        hs, cs, tanh_c, act, _, _ = saved
        i, f, g, o = (act[:, :, j * hs.shape[2]:(j + 1) * hs.shape[2]] for j in range(4))
        return LayerTrace((hs, cs), {"i": i, "f": f, "g": g, "o": o, "tanh(c)": tanh_c})
    if cell_name == "gru":
        hs, act, _, _, _ = saved
        r, z, n = (act[:, :, j * hs.shape[2]:(j + 1) * hs.shape[2]] for j in range(3))
        return LayerTrace((hs,), {"r": r, "z": z, "n": n})
    raise ValueError(f"no diagnostics for the {cell_name} cell")


def _input_side(params, config, k, x):
    """Layer k's input (N, E|H) -> its share of the pre-activations (N, G*H), as ``model._forward`` makes it."""
    if f"rnn.weight_ih_l{k}" in params:
        x = MatMul().forward(x, params[f"rnn.weight_ih_l{k}"])[0]
    if config.bias:
        x = BiasAdd().forward(x, params[f"rnn.bias_ih_l{k}"])[0]
    return x


def trace_layers(params, config: ModelConfig, inputs, hidden=None) -> list[LayerTrace]:
    """Forward only, layer by layer over inputs (T, B): every layer's states and activations."""
    T, B = inputs.shape
    state = config.cell_type.parts(hidden, config.num_layers, B, config.hidden_size, params["encoder.weight"].dtype)
    x = params["encoder.weight"][inputs.reshape(-1)]
    traces = []
    for k in range(config.num_layers):
        sequence = config.cell_type.sequence(T)
        x, saved = sequence.forward(_input_side(params, config, k, x), *(part[k] for part in state),
                                    params[f"rnn.weight_hh_l{k}"], params.get(f"rnn.bias_hh_l{k}"))
        traces.append(_read_saved(config.cell, saved))
    return traces


# -- gradient by lag -------------------------------------------------------------------


class LagGradients(NamedTuple):
    grads: np.ndarray  # (L, P, K+1, R, H): d loss_t / d part p of layer l's state at t - k, row r
    positions: tuple  # the sampled t; row r = i * B + b is position i, batch column b
    state: tuple  # the cell's state parts, ("h",) or ("h", "c")


def sample_positions(steps: int, max_lag: int, count: int) -> tuple:
    """``count`` positions t spread evenly over [max_lag, steps - 2] (each needs K earlier steps and a target)."""
    last = steps - 2
    if last < max_lag:
        raise ValueError(f"a sample of {steps} steps is too short for max_lag {max_lag}: "
                         f"it needs at least {max_lag + 2}")
    if count < 1:
        raise ValueError(f"positions must be at least 1, not {count}")
    return tuple(int(t) for t in np.unique(np.linspace(max_lag, last, count).round().astype(int)))


def _check_positions(positions, steps, max_lag):
    positions = tuple(sorted(int(t) for t in positions))
    if not positions or positions[0] < max_lag or positions[-1] > steps - 2:
        raise ValueError(f"positions must lie in [{max_lag}, {steps - 2}] (max_lag to the last step "
                         f"with a target), not {positions}")
    return positions


def _as_sample(ids):
    ids = as_ids(ids)
    if ids.ndim == 1:
        ids = ids[:, None]
    if ids.ndim != 2:
        raise ValueError(f"ids must be shaped (T, B), not {ids.shape}")
    return ids


def gradients_by_lag(params, config: ModelConfig, ids, *, max_lag: int = DEFAULT_MAX_LAG,
                     positions=DEFAULT_POSITIONS, hidden=None) -> LagGradients:
    """d loss_t / d state_{t-k} for k = 0 .. max_lag at sampled positions t, by the model's own backward.

    ids (T, B): step t reads ids[t] and loss_t is -log p(ids[t + 1]); the
    state before step 0 is ``hidden`` (None: zeros). ``positions``: how many
    t to sample evenly over [max_lag, T - 2], or the t themselves.
    Returns the gradients (L, P, K+1, R, H) with R = len(positions) * B.
    """
    ids = _as_sample(ids)
    with own_threads():
        return _gradients_on_traces(params, config, ids, max_lag, positions,
                                    trace_layers(params, config, ids[:-1], hidden))


def _gradients_on_traces(params, config, ids, max_lag, positions, traces) -> LagGradients:
    """``gradients_by_lag`` with the sample's forward pass (``trace_layers``) already made."""
    T, B = ids.shape
    K = int(max_lag)
    if K < 0:
        raise ValueError(f"max_lag must be >= 0, not {max_lag}")
    if isinstance(positions, (int, np.integer)):
        positions = sample_positions(T, K, int(positions))
    positions = _check_positions(positions, T, K)
    state = config.cell_type.state
    # window i covers steps t_i - K .. t_i and starts from the state after step t_i - K - 1,
    # which is trace.states[p][t_i - K] (states[p][0] is the state before step 0)
    start = tuple(xp.concatenate([xp.stack([trace.states[p][t - K] for trace in traces]) for t in positions],
                                 axis=1)
                  for p in range(len(state)))  # each (L, R, H)
    window = xp.concatenate([ids[t - K:t + 1] for t in positions], axis=1)  # (K+1, R)
    targets = xp.concatenate([ids[t + 1] for t in positions])  # (R,)
    grads = _window_gradients(params, config, window, targets, start)
    if config.cell == "lstm":
        _add_cell_to_output_path(grads, traces, positions)
    return LagGradients(grads, positions, state)


def _add_cell_to_output_path(grads, traces, positions):
    """LSTM: the state nodes' gradient at c_s holds h_s fixed; c_s also reaches the loss through its own
    step's output h_s = o_s tanh(c_s). Adds that path, d loss / d h_s * o_s (1 - tanh(c_s)^2), in place,
    so that the c gradient is the whole d loss_t / d c_s, the memory cell's error of the LSTM papers.
    grads (L, 2, K+1, R, H); the o and tanh(c) of each window step come from the traces."""
    K = grads.shape[2] - 1
    for k, trace in enumerate(traces):
        o, tanh_c = trace.activations["o"], trace.activations["tanh(c)"]  # (T, B, H), step s at [s]
        for lag in range(K + 1):
            steps = [t - lag for t in positions]
            to_c = xp.concatenate([o[s] * (1 - tanh_c[s] * tanh_c[s]) for s in steps])  # (R, H)
            grads[k, 1, lag] += grads[k, 0, lag] * to_c


def _window_gradients(params, config, window, targets, start):
    """The chain of one-step gates over window (K+1, R) from ``start`` (parts, each (L, R, H)); loss at the
    last step only. Returns (L, P, K+1, R, H), lag k = K - window step."""
    steps, R = window.shape
    L, cell = config.num_layers, config.cell_type
    dtype = params["encoder.weight"].dtype
    tape = Tape()
    below = params["encoder.weight"][window.reshape(-1)]
    first_input = _input_side(params, config, 0, below).reshape(steps, R, -1)  # a constant: no state in it
    previous = [tape.param(xp.stack([part[k] for part in start])) for k in range(L)]  # (P, R, H) each
    nodes = [[None] * steps for _ in range(L)]
    for s in range(steps):
        for k in range(L):
            if k == 0:
                xin = first_input[s]
            else:
                xin = tape.apply(StatePart(0), nodes[k - 1][s])
                if f"rnn.weight_ih_l{k}" in params:
                    xin = tape.apply(MatMul(), xin, params[f"rnn.weight_ih_l{k}"])
                if config.bias:
                    xin = tape.apply(BiasAdd(), xin, params[f"rnn.bias_ih_l{k}"])
            nodes[k][s] = tape.apply(StateStep(cell), xin, previous[k], params[f"rnn.weight_hh_l{k}"],
                                     params.get(f"rnn.bias_hh_l{k}"))
            previous[k] = nodes[k][s]
    top = tape.apply(StatePart(0), nodes[L - 1][steps - 1])
    loss = config.output_layer().loss(tape, top, params, targets, xp.ones(R, dtype=dtype))
    tape.backward(loss)
    grads = zeros((L, len(cell.state), steps, R, start[0].shape[2]), dtype=dtype)
    for k in range(L):
        for s in range(steps):
            if nodes[k][s].grad is not None:
                grads[k, :, steps - 1 - s] = nodes[k][s].grad
    return grads


@dataclass(frozen=True)
class LagCurve:
    """The mean gradient norm by lag of one layer's state part, and its ratio to lag 0."""

    layer: int
    part: str  # "h", or "c" (the LSTM's memory cell)
    mean_norm: tuple  # (K+1,) mean over positions and rows of |d loss_t / d part_{t-k}|
    ratio: tuple  # (K+1,) mean_norm / the layer's h mean_norm at k = 0
    effective_memory: int  # the largest k with ratio above the threshold


def effective_memory(ratio, threshold: float = DEFAULT_THRESHOLD) -> int:
    """The largest lag k with ratio[k] > threshold (0 when there is none)."""
    above = np.flatnonzero(np.asarray(ratio, dtype=np.float64) > threshold)
    return int(above[-1]) if above.size else 0


def lag_curves(lag_grads: LagGradients, threshold: float = DEFAULT_THRESHOLD) -> tuple:
    """Mean norms and ratios by lag, one ``LagCurve`` per layer and state part (layer-major)."""
    norms = np.linalg.norm(lag_grads.grads.astype(np.float64), axis=-1).mean(axis=-1)  # (L, P, K+1)
    curves = []
    for layer, by_part in enumerate(norms):
        lag0 = by_part[0, 0]
        for part, mean_norm in zip(lag_grads.state, by_part):
            ratio = mean_norm / lag0 if lag0 > 0 else np.zeros_like(mean_norm)
            curves.append(LagCurve(layer, part, tuple(float(v) for v in mean_norm), tuple(float(v) for v in ratio),
                                   effective_memory(ratio, threshold)))
    return tuple(curves)


# -- weights and activations -----------------------------------------------------------


@dataclass(frozen=True)
class LayerSpectrum:
    """The largest singular values of one layer's weight_hh: the whole (G*H, H) matrix and each (H, H) gate block."""

    layer: int
    whole: tuple
    blocks: dict = field(default_factory=dict)  # gate name -> values; empty for the one-block tanh RNN


def singular_values(weight, count: int) -> tuple:
    """The ``count`` largest singular values of a matrix, largest first."""
    values = np.linalg.svd(np.asarray(weight, dtype=np.float64), compute_uv=False)
    return tuple(float(v) for v in values[:count])


def spectra(params, config: ModelConfig, count: int = 3) -> tuple:
    """Each layer's ``LayerSpectrum``."""
    H, names = config.hidden_size, GATE_BLOCKS[config.cell]
    result = []
    for k in range(config.num_layers):
        weight = params[f"rnn.weight_hh_l{k}"]
        blocks = {} if len(names) == 1 else {name: singular_values(weight[j * H:(j + 1) * H], count)
                                             for j, name in enumerate(names)}
        result.append(LayerSpectrum(k, singular_values(weight, count), blocks))
    return tuple(result)


def saturated_share(values, kind: str) -> float:
    """The share of saturated entries: |tanh| > 0.99, or a sigmoid < 0.01 or > 0.99."""
    values = np.asarray(values)
    if values.size == 0:
        return 0.0
    if kind == "tanh":
        return float(np.mean(np.abs(values) > TANH_SATURATED))
    if kind == "sigmoid":
        return float(np.mean((values < SIGMOID_SATURATED) | (values > 1 - SIGMOID_SATURATED)))
    raise ValueError(f"kind must be 'tanh' or 'sigmoid', not {kind!r}")


def saturation(traces, cell_name: str) -> tuple:
    """Per layer: activation name -> share of saturated units over the sample's steps and rows."""
    return tuple({name: saturated_share(trace.activations[name], kind) for name, kind in ACTIVATIONS[cell_name]}
                 for trace in traces)


# -- the report ------------------------------------------------------------------------


def _finite(value):
    return value if np.isfinite(value) else None


@dataclass(frozen=True)
class Diagnosis:
    """What ``diagnose`` measured on one model and sample."""

    cell: str
    hidden_size: int
    num_layers: int
    max_lag: int
    threshold: float
    positions: tuple  # the sampled t
    rows: int  # (position, batch column) pairs averaged over
    curves: tuple  # LagCurve per layer and state part, layer-major
    spectra: tuple  # LayerSpectrum per layer
    saturation: tuple  # per layer: activation name -> saturated share
    label: str | None = None

    def curve(self, layer: int = -1, part: str = "h") -> LagCurve:
        """The curve of one layer (-1: the top) and state part."""
        layer = layer % self.num_layers
        for curve in self.curves:
            if curve.layer == layer and curve.part == part:
                return curve
        raise KeyError(f"no curve for layer {layer}, part {part!r}")

    @property
    def effective_memory(self) -> int:
        """The top layer's h effective memory."""
        return self.curve(-1, "h").effective_memory

    def to_dict(self) -> dict:
        """Plain JSON values (non-finite numbers as null)."""
        return {
            "label": self.label, "cell": self.cell, "hidden_size": self.hidden_size, "num_layers": self.num_layers,
            "max_lag": self.max_lag, "threshold": self.threshold, "positions": list(self.positions),
            "rows": self.rows, "effective_memory": self.effective_memory,
            "curves": [{"layer": c.layer, "part": c.part, "effective_memory": c.effective_memory,
                        "mean_norm": [_finite(v) for v in c.mean_norm], "ratio": [_finite(v) for v in c.ratio]}
                       for c in self.curves],
            "singular_values": [{"layer": s.layer, "whole": list(s.whole),
                                 "blocks": {name: list(v) for name, v in s.blocks.items()}} for s in self.spectra],
            "saturation": [{"layer": k, **shares} for k, shares in enumerate(self.saturation)],
        }

    def format_table(self) -> str:
        """A plain-text report for a terminal."""
        heads = [f"L{c.layer} {c.part}" for c in self.curves]
        width = max(10, *(len(h) + 2 for h in heads))
        lines = [f"{self.label + ': ' if self.label else ''}{self.cell}, {self.num_layers} x {self.hidden_size}, "
                 f"{len(self.positions)} positions x {self.rows // len(self.positions)} rows",
                 "",
                 "gradient ratio |d loss_t / d state_(t-k)| / |d loss_t / d h_t|",
                 "lag".rjust(5) + "".join(h.rjust(width) for h in heads)]
        for k in _table_lags(self.max_lag):
            lines.append(f"{k:5d}" + "".join(f"{c.ratio[k]:{width}.2e}" for c in self.curves))
        memory = [(f">={c.effective_memory}" if c.effective_memory == self.max_lag else str(c.effective_memory))
                  for c in self.curves]
        lines.append(f"effective memory (ratio > {self.threshold:g}):")
        lines.append(" " * 5 + "".join(m.rjust(width) for m in memory))
        lines.append("")
        lines.append("largest singular values of weight_hh")
        for s in self.spectra:
            text = f"  layer {s.layer}: whole " + " ".join(f"{v:.3g}" for v in s.whole)
            for name, values in s.blocks.items():
                text += f"  | {name} " + " ".join(f"{v:.3g}" for v in values)
            lines.append(text)
        lines.append("")
        lines.append("saturated units (|tanh| > 0.99, sigmoid < 0.01 or > 0.99)")
        for k, shares in enumerate(self.saturation):
            lines.append(f"  layer {k}: " + "  ".join(f"{name} {share:.1%}" for name, share in shares.items()))
        return "\n".join(lines)


def _table_lags(max_lag: int) -> list:
    """The lags a table shows: all up to 10, then every 5th, and the last."""
    lags = [k for k in range(max_lag + 1) if k <= 10 or k % 5 == 0]
    return lags if lags[-1] == max_lag else lags + [max_lag]


def diagnose(model: LanguageModel, ids, *, max_lag: int = DEFAULT_MAX_LAG, threshold: float = DEFAULT_THRESHOLD,
             positions=DEFAULT_POSITIONS, hidden=None, top_singular: int = 3, label: str | None = None) -> Diagnosis:
    """Gradient by lag, effective memory, singular values and saturation of ``model`` on ids (T, B).

    ``positions``: how many t to sample evenly over [max_lag, T - 2], or the
    t themselves; every batch column is used at each. ``hidden``: the state
    before ids[0] (None: zeros). For params and a ``ModelConfig``, pass
    ``LanguageModel.from_config(config, params)``.
    """
    params, config = model.params, model.config
    ids = _as_sample(ids)
    with own_threads():
        traces = trace_layers(params, config, ids[:-1], hidden)
        lag_grads = _gradients_on_traces(params, config, ids, max_lag, positions, traces)
    return Diagnosis(
        cell=config.cell, hidden_size=config.hidden_size, num_layers=config.num_layers, max_lag=int(max_lag),
        threshold=float(threshold), positions=lag_grads.positions, rows=lag_grads.grads.shape[3],
        curves=lag_curves(lag_grads, threshold), spectra=spectra(params, config, top_singular),
        saturation=saturation(traces, config.cell), label=label)
