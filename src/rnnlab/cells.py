"""Composite gates for the recurrence: the tutorial's "big operation unit", fused.

``RNNStep`` is one tanh RNN step over a batch; ``RNNSequence`` runs all steps
of a sequence and owns the BPTT mode of its backward. Both are gates (a
``forward`` and a ``backward`` side by side) and are checked in the tests
against the same computation built from the primitive gates of ``gates.py``.

Shapes: T time steps, B sequences in the batch, H hidden units. The input
``xin`` is what the input side already contributes to the pre-activation,
``U x_t`` in the tutorial (an embedding row, plus ``W_ih x_t + b_ih`` when
there is an input projection), given as (T*B, H) rows in time-major order.

    s_t = tanh(xin_t + s_{t-1} W_hh^T + b_hh)        s_{-1} = h0
"""
from __future__ import annotations

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


class RNNSequence(Gate):
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

    def __init__(self, steps, mode="full", truncate=None):
        check_bptt(mode, truncate)
        self.steps = steps
        self.mode = mode
        self.truncate = truncate

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
