"""The recurrent cells: composite gates for the recurrence, and the registry of cells.

``RNNStep`` is one tanh RNN step over a batch; ``RNNSequence`` runs all steps
of a sequence and owns the BPTT mode of its backward. Both are gates (a
``forward`` and a ``backward`` side by side) and are checked in the tests
against the same computation built from the primitive gates of ``gates.py``.

``CELLS`` is the one registry of cells (name -> ``Cell``): each entry says
how many gate blocks its weights hold, its parameters' names and shapes, the
parts of its carried state, its sequence gate and which BPTT modes it
supports. The model, the trainer, the command line and checkpoints ask it
and nothing else.

Shapes: T time steps, B sequences in the batch, H hidden units. The input
``xin`` is what the input side already contributes to the pre-activation,
``U x_t`` in the tutorial (an embedding row, plus ``W_ih x_t + b_ih`` when
there is an input projection), given as (T*B, H) rows in time-major order.

    s_t = tanh(xin_t + s_{t-1} W_hh^T + b_hh)        s_{-1} = h0
"""
from __future__ import annotations

from dataclasses import dataclass

from .backend import empty, xp, zeros
from .gates import Gate

BPTT_MODES = ("full", "chunk", "window")


class RNNStep(Gate):
    """One step: xin (B, H), h_prev (B, H), W_hh (H, H), b_hh (H,) or None -> h (B, H)."""

    def forward(self, xin, h_prev, w_hh, b_hh):
        pre = xin + h_prev @ w_hh.T
        if b_hh is not None:
            pre += b_hh
        h = xp.tanh(pre)
        return h, (h_prev, w_hh, h, b_hh is not None)

    def backward(self, saved, dh):
        h_prev, w_hh, h, has_bias = saved
        dpre = (1.0 - h * h) * dh
        db = dpre.sum(axis=0) if has_bias else None
        return dpre, dpre @ w_hh, dpre.T @ h_prev, db


def check_bptt(mode, truncate):
    """Validate a BPTT mode and its truncation length (None: no truncation).

    A window of 0 earlier steps is allowed (the tutorial's loop is then empty:
    each loss reaches its own step only); a chunk needs at least one step.
    """
    if mode not in BPTT_MODES:
        raise ValueError(f"bptt must be one of {', '.join(BPTT_MODES)}, not {mode!r}")
    low = 0 if mode == "window" else 1
    if truncate is not None and (int(truncate) != truncate or truncate < low):
        raise ValueError(f"truncate must be an integer >= {low} or None for {mode} BPTT, not {truncate!r}")


class SequenceGate(Gate):
    """All T steps of a cell over a batch, with the BPTT mode in its backward.

    ``forward(xin, *state, w_hh, b_hh)``: xin (T*B, G*H), the input side's
    share of the pre-activations in time-major rows; ``state`` the cell's
    carried state, one (B, H) array per part; returns the outputs (T*B, H)
    (the ``h`` of every step) and sets ``self.final``, the state after the
    last step (a tuple of (B, H) arrays, the initial state when T = 0).
    ``backward`` returns the gradients of xin, of each state part, of w_hh
    and of b_hh.
    """

    def __init__(self, steps, mode="full", truncate=None):
        check_bptt(mode, truncate)
        self.steps = steps
        self.mode = mode
        self.truncate = truncate
        self.final = None


class RNNSequence(SequenceGate):
    """All T steps: xin (T*B, H), h0 (B, H), W_hh (H, H), b_hh (H,) or None -> states (T*B, H).

    The backward implements three BPTT modes (``truncate`` = K):

    * ``"full"``: the gradient flows through every step back to h0;
    * ``"chunk"``: steps are cut into chunks of K; the gradient stops at the
      start of each chunk (PyTorch word_language_model, min-char-rnn);
    * ``"window"``: the tutorial's semantics: the loss at step t reaches back
      through at most K earlier steps, and the gradients of all those paths
      are summed. Computed lag by lag: ``G_j[k]`` is the gradient at the
      pre-activation of step k that comes from the output of step k + j, so
      ``G_0 = (1 - s^2) dS`` and ``G_j[k] = (1 - s_k^2) (G_{j-1}[k+1] W_hh)``,
      one (T*B, H) x (H, H) product per lag for all steps at once. Nothing is
      recomputed and no one-hot vector appears.
    """

    def forward(self, xin, h0, w_hh, b_hh):
        T = self.steps
        B, H = h0.shape
        xin = xin.reshape(T, B, H)
        states = empty((T, B, H), dtype=xin.dtype)
        w_t = w_hh.T
        h = h0
        for t in range(T):
            pre = xp.matmul(h, w_t, out=states[t])
            pre += xin[t]
            if b_hh is not None:
                pre += b_hh
            xp.tanh(pre, out=pre)
            h = pre
        self.final = (h.copy(),)  # a copy: the final state must not keep the (T, B, H) states alive
        return states.reshape(T * B, H), (h0, w_hh, states, b_hh is not None)

    def backward(self, saved, d_states):
        h0, w_hh, states, has_bias = saved
        T, B, H = states.shape
        d_states = d_states.reshape(T, B, H)
        slope = 1.0 - states * states  # tanh'(pre) = 1 - s^2, (T, B, H)
        if self.mode == "window":
            dpre, dh0 = self._window(slope, d_states, w_hh, h0)
        else:
            dpre, dh0 = self._through_time(slope, d_states, w_hh)
        rows = dpre.reshape(T * B, H)
        dw = dpre[0].T @ h0
        if T > 1:
            dw += dpre[1:].reshape(-1, H).T @ states[:-1].reshape(-1, H)
        db = rows.sum(axis=0) if has_bias else None
        return rows, dh0, dw, db

    def _through_time(self, slope, d_states, w_hh):
        """Full or chunked BPTT: one (B, H) x (H, H) product per step, newest first."""
        T, B, H = slope.shape
        cut = self.truncate if self.mode == "chunk" and self.truncate else T
        dpre = empty((T, B, H), dtype=slope.dtype)
        d_next = zeros((B, H), dtype=slope.dtype)
        for t in range(T - 1, -1, -1):
            xp.add(d_states[t], d_next, out=dpre[t])
            dpre[t] *= slope[t]
            if t % cut == 0:  # the start of a chunk: the gradient stops here
                d_next = zeros((B, H), dtype=slope.dtype)
            else:
                d_next = dpre[t] @ w_hh
        # h0 is the start of the first chunk: only full BPTT reaches it.
        dh0 = dpre[0] @ w_hh if self.mode == "full" else zeros((B, H), dtype=slope.dtype)
        return dpre, dh0

    def _window(self, slope, d_states, w_hh, h0):
        """The tutorial's truncated paths, summed lag by lag (see the class docstring)."""
        T, B, H = slope.shape
        lags = T - 1 if self.truncate is None else min(self.truncate, T - 1)
        g = slope * d_states  # G_0, (T, B, H)
        dpre = g.copy()
        for j in range(1, lags + 1):
            # G_j over steps 0 .. T-1-j; one 2-D product (a 3-D one would run T - j small ones)
            g = slope[: T - j] * (g[1:].reshape(-1, H) @ w_hh).reshape(T - j, B, H)
            dpre[: T - j] += g
        # h0 = s_{-1} is reached from the losses at steps t <= K: those are the
        # lags that appear at step 0.
        dh0 = dpre[0] @ w_hh
        return dpre, dh0


# -- the registry ------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """What the rest of rnnlab knows of a recurrent cell.

    Layer k's parameters are named as in PyTorch's ``nn.RNN`` / ``nn.GRU`` /
    ``nn.LSTM``: ``rnn.weight_ih_l{k}`` (G*H, I), ``rnn.weight_hh_l{k}``
    (G*H, H), ``rnn.bias_ih_l{k}`` and ``rnn.bias_hh_l{k}`` (G*H,), with G
    = ``gates``. The carried state is one (num_layers, B, H) array per entry
    of ``state``; the model hands it out as that array for a one-part state
    (the tanh RNN's ``hidden``) and as a tuple otherwise (an LSTM's (h, c)),
    as PyTorch does.
    """

    name: str
    gates: int  # blocks of H rows in weight_ih and weight_hh
    state: tuple  # names of the carried state's parts
    sequence: type  # a SequenceGate: sequence(T, mode, truncate)
    bptt_modes: tuple  # the BPTT modes its sequence gate implements (window: for one layer only)
    summary: str  # one line for the command line's help

    def param_shapes(self, layer, input_size, hidden_size, bias) -> dict:
        """Layer ``layer``'s parameters: name -> shape. ``input_size`` None: the layer takes
        its input as the pre-activation itself (no weight_ih; the tutorial's U x as an embedding row)."""
        rows = self.gates * hidden_size
        shapes = {}
        if input_size is not None:
            shapes[f"rnn.weight_ih_l{layer}"] = (rows, input_size)
        shapes[f"rnn.weight_hh_l{layer}"] = (rows, hidden_size)
        if bias:
            shapes[f"rnn.bias_ih_l{layer}"] = (rows,)
            shapes[f"rnn.bias_hh_l{layer}"] = (rows,)
        return shapes

    def check_bptt(self, mode, truncate, num_layers) -> None:
        """``ValueError`` unless this cell runs BPTT ``mode`` with ``truncate`` at ``num_layers`` layers."""
        check_bptt(mode, truncate)
        if mode not in self.bptt_modes:
            raise ValueError(f"the {self.name} cell has no {mode} BPTT; choose from: {', '.join(self.bptt_modes)}")
        if mode == "window" and num_layers > 1:
            raise ValueError("window BPTT is the tutorial's one-layer rule; use chunk or full BPTT "
                             "with several layers")

    def zero_state(self, num_layers, batch, hidden_size, dtype) -> tuple:
        """The initial carried state: zeros, one (num_layers, batch, H) array per part."""
        return tuple(zeros((num_layers, batch, hidden_size), dtype=dtype) for _ in self.state)

    def parts(self, hidden, num_layers, batch, hidden_size, dtype) -> tuple:
        """The carried state as given to the model (an array, a tuple, or None for zeros) -> its parts,
        checked against the shape (num_layers, batch, H)."""
        if hidden is None:
            return self.zero_state(num_layers, batch, hidden_size, dtype)
        given = (hidden,) if len(self.state) == 1 else tuple(hidden)
        shape = (num_layers, batch, hidden_size)
        if len(given) != len(self.state):
            raise ValueError(f"the {self.name} cell carries {len(self.state)} state arrays "
                             f"({', '.join(self.state)}), not {len(given)}")
        parts = tuple(xp.asarray(part, dtype=dtype) for part in given)
        for name, part in zip(self.state, parts):
            if part.shape != shape:
                raise ValueError(f"hidden must be shaped {shape}, not {part.shape}" if len(parts) == 1
                                 else f"state {name} must be shaped {shape}, not {part.shape}")
        return parts

    def hidden(self, parts):
        """The carried state as the model hands it out: the array itself for a one-part state, else a tuple."""
        return parts[0] if len(parts) == 1 else tuple(parts)


CELLS = {
    "rnn": Cell("rnn", gates=1, state=("h",), sequence=RNNSequence, bptt_modes=BPTT_MODES,
                summary="tanh RNN, the tutorial's: h_t = tanh(W_ih x_t + b_ih + W_hh h_(t-1) + b_hh)"),
}


def get_cell(name) -> Cell:
    """The registry's entry for ``name``; ``ValueError`` naming the choices otherwise."""
    if name not in CELLS:
        raise ValueError(f"cell {name!r} is not available; choose from: {', '.join(CELLS)}")
    return CELLS[name]
