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

Shapes: T time steps, B sequences in the batch, H hidden units, G gate
blocks (1 for the tanh RNN, 3 for the GRU, 4 for the LSTM). The input ``xin``
is what the input side already contributes to the G*H pre-activations,
``U x_t`` in the tutorial (an embedding row, plus ``W_ih x_t + b_ih`` when
there is an input projection), given as (T*B, G*H) rows in time-major order.
Without an input projection (``embed_size=None``) the encoder is (V, G*H):
each word's row is its share of all G*H pre-activations, block by block in
the cell's gate order (for the LSTM, a word's own i, f, g and o inputs).

    tanh RNN:  s_t = tanh(xin_t + s_{t-1} W_hh^T + b_hh)        s_{-1} = h0

    LSTM (torch.nn.LSTM; blocks i, f, g, o of a_t = xin_t + h_{t-1} W_hh^T + b_hh):
        i = sigmoid(a_i)  f = sigmoid(a_f)  g = tanh(a_g)  o = sigmoid(a_o)
        c_t = f * c_{t-1} + i * g        h_t = o * tanh(c_t)

    GRU (torch.nn.GRU; blocks r, z, n of xin_t and of q_t = h_{t-1} W_hh^T + b_hh):
        r = sigmoid(xin_r + q_r)  z = sigmoid(xin_z + q_z)  n = tanh(xin_n + r * q_n)
        h_t = (1 - z) * n + z * h_{t-1}

The hh-side of n, b_hn included, is inside r * (PyTorch's choice: b_hn is
not b_in's twin, as the other blocks' biases are). The sigmoids are
``0.5 + 0.5 tanh(a/2)``: one tanh call over all gate blocks (the halving is
folded into the weights' rows, exactly, being a power of two) and no exp that
can overflow; accurate to a few ulps of 1, so a sigmoid below ~1e-17 (float64)
comes out as 0.
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

    ``final_grad``: None (training: the gradient stops at the final state),
    or a gradient arriving at the final state, one (B, H) array per part,
    which the full and chunk backward take up as if it came from a later
    step. It lets a chain of one-step gates carry every part of the state
    from step to step (``diagnose.StateStep``).
    """

    def __init__(self, steps, mode="full", truncate=None):
        check_bptt(mode, truncate)
        self.steps = steps
        self.mode = mode
        self.truncate = truncate
        self.final = None
        self.final_grad = None

    def _final_grad(self, part, shape, dtype):
        """A fresh array ``shape``: the gradient at part ``part`` of the final state (zeros without ``final_grad``)."""
        if self.final_grad is None:
            return zeros(shape, dtype=dtype)
        return xp.array(self.final_grad[part], dtype=dtype)


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
        d_next = self._final_grad(0, (B, H), slope.dtype)
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


def _sigmoid_halves(blocks, sigmoid, H, dtype):
    """(G*H,) factors: 0.5 on the blocks that are sigmoids, 1 on the tanh blocks.

    sigmoid(a) = 0.5 + 0.5 tanh(a / 2): with the sigmoid blocks' pre-activations
    halved (exactly: a power of two), one tanh call serves every block, and
    ``act * half + (1 - half)`` turns the sigmoid blocks' tanh into sigmoids.
    """
    half = xp.ones((blocks, H), dtype=dtype)
    half[list(sigmoid)] = 0.5
    return half.reshape(-1)


def _window_lags(steps, truncate):
    """How many earlier steps a loss reaches in window mode: K, or T - 1 when untruncated."""
    return steps - 1 if truncate is None else min(truncate, steps - 1)


class LSTMSequence(SequenceGate):
    """All T steps of an LSTM: xin (T*B, 4H), h0, c0 (B, H), W_hh (4H, H), b_hh (4H,) or None
    -> h of every step (T*B, H); ``final`` = (h_T, c_T).

    Gate blocks in PyTorch's order i, f, g, o (see the module docstring). The
    forward saves the gate activations (T, B, 4H), c_t and tanh(c_t); the
    backward makes from them, once for all steps, the factors that turn the
    gradients arriving at (h_t, c_t) into the gradient of the pre-activations:

        dc~ = dc + dh * o (1 - tanh(c)^2)                   (the total at c_t)
        da = [dc~ g i(1-i), dc~ c_{t-1} f(1-f), dc~ i (1-g^2), dh tanh(c) o(1-o)]
        dh_{t-1} = da W_hh        dc_{t-1} = dc~ f

    The BPTT modes are RNNSequence's: "full" and "chunk" walk back one step at
    a time (one (B, 4H) x (4H, H) product per step); "window" goes lag by lag,
    carrying the pair (dh, dc) that the loss at step k + j sends to the state
    of step k, for all k at once: one (T*B, 4H) x (4H, H) product per lag.
    """

    def forward(self, xin, h0, c0, w_hh, b_hh):
        T = self.steps
        B, H = h0.shape
        dtype = xin.dtype
        half = _sigmoid_halves(4, (0, 1, 3), H, dtype)
        shift = 1 - half  # sigmoid = 0.5 tanh(a/2) + 0.5; g stays tanh(a)
        act = xp.multiply(xin.reshape(T, B, 4 * H), half)  # becomes the gate activations
        if b_hh is not None:
            act += b_hh * half
        w_t = xp.ascontiguousarray((w_hh * half[:, None]).T)  # (H, 4H): OpenBLAS runs h @ w_t twice as fast as h @ W.T
        hs = empty((T + 1, B, H), dtype=dtype)  # hs[t + 1] = h_t, hs[0] = h0
        cs = empty((T + 1, B, H), dtype=dtype)
        tanh_c = empty((T, B, H), dtype=dtype)
        hs[0], cs[0] = h0, c0
        q = empty((B, 4 * H), dtype=dtype)
        ig = empty((B, H), dtype=dtype)
        for t in range(T):
            a = act[t]
            a += xp.matmul(hs[t], w_t, out=q)
            xp.tanh(a, out=a)
            a *= half
            a += shift
            xp.multiply(a[:, :H], a[:, 2 * H:3 * H], out=ig)  # i * g
            c = xp.multiply(a[:, H:2 * H], cs[t], out=cs[t + 1])  # f * c_{t-1}
            c += ig
            xp.multiply(a[:, 3 * H:], xp.tanh(c, out=tanh_c[t]), out=hs[t + 1])  # o * tanh(c_t)
        self.final = (hs[T].copy(), cs[T].copy())  # copies: the final state must not keep the buffers alive
        return hs[1:].reshape(T * B, H), (hs, cs, tanh_c, act, w_hh, b_hh is not None)

    def backward(self, saved, d_outputs):
        hs, cs, tanh_c, act, w_hh, has_bias = saved
        T, B, H = tanh_c.shape
        d_outputs = d_outputs.reshape(T, B, H)
        gates = act.reshape(T, B, 4, H)
        # factor[:, :, :3] * dc~ and factor[:, :, 3] * dh are the pre-activations' gradients
        factor = xp.multiply(gates, gates)
        xp.subtract(gates, factor, out=factor)  # s(1 - s) in every block (the g block is rewritten)
        i, f, g = gates[:, :, 0], gates[:, :, 1], gates[:, :, 2]
        factor[:, :, 0] *= g
        factor[:, :, 1] *= cs[:-1]
        xp.multiply(g, g, out=factor[:, :, 2])
        xp.subtract(1, factor[:, :, 2], out=factor[:, :, 2])
        factor[:, :, 2] *= i
        factor[:, :, 3] *= tanh_c
        to_c = xp.multiply(tanh_c, tanh_c)  # o (1 - tanh(c)^2): dh's way to c
        xp.subtract(1, to_c, out=to_c)
        to_c *= gates[:, :, 3]
        if self.mode == "window":
            da, dh0, dc0 = self._window(factor, to_c, f, d_outputs, w_hh)
        else:
            da, dh0, dc0 = self._through_time(factor, to_c, f, d_outputs, w_hh)
        rows = da.reshape(T * B, 4 * H)
        dw = rows.T @ hs[:-1].reshape(T * B, H)
        db = rows.sum(axis=0) if has_bias else None
        return rows, dh0, dc0, dw, db

    def _through_time(self, factor, to_c, f, d_outputs, w_hh):
        """Full or chunked BPTT, newest step first; the gradient stops at chunk starts."""
        T, B, _, H = factor.shape
        dtype = factor.dtype
        cut = self.truncate if self.mode == "chunk" and self.truncate else T
        da = empty((T, B, 4, H), dtype=dtype)
        dh = empty((B, H), dtype=dtype)
        dh_next = self._final_grad(0, (B, H), dtype)
        dc = self._final_grad(1, (B, H), dtype)  # the gradient at c_t, from later steps, then in total
        tmp = empty((B, H), dtype=dtype)
        dh0 = dc0 = None
        for t in range(T - 1, -1, -1):
            xp.add(d_outputs[t], dh_next, out=dh)
            dc += xp.multiply(dh, to_c[t], out=tmp)
            xp.multiply(factor[t, :, :3], dc[:, None, :], out=da[t, :, :3])
            xp.multiply(factor[t, :, 3], dh, out=da[t, :, 3])
            if t % cut:
                xp.matmul(da[t].reshape(B, 4 * H), w_hh, out=dh_next)
                dc *= f[t]
            else:  # the start of a chunk: the gradient stops here; h0, c0 start the first
                if self.mode == "full":
                    dh0, dc0 = da[0].reshape(B, 4 * H) @ w_hh, dc * f[0]
                dh_next[...] = 0
                dc[...] = 0
        if dh0 is None:
            dh0, dc0 = zeros((B, H), dtype=dtype), zeros((B, H), dtype=dtype)
        return da, dh0, dc0

    def _window(self, factor, to_c, f, d_outputs, w_hh):
        """The tutorial's truncated paths, summed lag by lag, through h and c.

        (dh, dc) of lag j over steps 0 .. T-1-j is what the losses at steps
        j .. T-1 send to the state of the step j earlier; the pre-activations'
        gradient of each lag is added to the total, and the next lag is one
        product away. The state before step 0 (h0, c0) gets every lag that
        reaches step 0.
        """
        T, B, _, H = factor.shape
        lags = _window_lags(T, self.truncate)
        da = empty((T, B, 4, H), dtype=factor.dtype)
        dh, dc = d_outputs, None
        dc0 = zeros((B, H), dtype=factor.dtype)
        for j in range(lags + 1):
            n = T - j
            dc_total = dh * to_c[:n] if dc is None else dc + dh * to_c[:n]
            lag = da if j == 0 else empty((n, B, 4, H), dtype=factor.dtype)
            xp.multiply(factor[:n, :, :3], dc_total[:, :, None, :], out=lag[:, :, :3])
            xp.multiply(factor[:n, :, 3], dh, out=lag[:, :, 3])
            if j:
                da[:n] += lag
            dc0 += dc_total[0]
            if j < lags:
                dh = (lag[1:].reshape(-1, 4 * H) @ w_hh).reshape(n - 1, B, H)
                dc = dc_total[1:] * f[1:n]
        return da, da[0].reshape(B, 4 * H) @ w_hh, dc0 * f[0]


class GRUSequence(SequenceGate):
    """All T steps of a GRU: xin (T*B, 3H), h0 (B, H), W_hh (3H, H), b_hh (3H,) or None
    -> h of every step (T*B, H); ``final`` = (h_T,).

    Gate blocks in PyTorch's order r, z, n (see the module docstring). The
    forward saves the activations r, z, n, the hh-side of n (q_n = W_hn h +
    b_hn) and the states; the backward makes from them, once for all steps,
    the factors that turn the gradient dh arriving at h_t into the gradient
    of the hh-side pre-activations dq = [dq_r, dq_z, dq_n] and of xin:

        dn~ = dh (1 - z) (1 - n^2)        (the gradient at n's pre-activation: d xin_n)
        dq = [dn~ q_n r(1-r), dh (h_{t-1} - n) z(1-z), dn~ r]      d xin = [dq_r, dq_z, dn~]
        dh_{t-1} = dq W_hh + dh z

    The BPTT modes are RNNSequence's; "window" carries dh lag by lag.
    """

    def forward(self, xin, h0, w_hh, b_hh):
        T = self.steps
        B, H = h0.shape
        dtype = xin.dtype
        half = _sigmoid_halves(3, (0, 1), H, dtype)
        act = xp.multiply(xin.reshape(T, B, 3 * H), half)  # becomes r, z, n
        b_n = None
        if b_hh is not None:  # b_hr, b_hz join xin; b_hn stays inside r * (...)
            act[:, :, :2 * H] += b_hh[:2 * H] * half[:2 * H]
            b_n = b_hh[2 * H:]
        w_t = xp.ascontiguousarray((w_hh * half[:, None]).T)  # (H, 3H), contiguous: see LSTMSequence
        hh = empty((T, B, 3 * H), dtype=dtype)  # h_{t-1} W_hh^T (r, z halved) + b_hn: q_n is hh[..., 2H:]
        hs = empty((T + 1, B, H), dtype=dtype)
        hs[0] = h0
        tmp = empty((B, H), dtype=dtype)
        for t in range(T):
            a, q = act[t], xp.matmul(hs[t], w_t, out=hh[t])
            if b_n is not None:
                q[:, 2 * H:] += b_n
            rz = a[:, :2 * H]
            rz += q[:, :2 * H]
            xp.tanh(rz, out=rz)
            rz *= 0.5
            rz += 0.5
            n = a[:, 2 * H:]
            n += xp.multiply(a[:, :H], q[:, 2 * H:], out=tmp)  # xin_n + r * q_n
            xp.tanh(n, out=n)
            xp.subtract(hs[t], n, out=tmp)  # h' = n + z (h - n)
            tmp *= a[:, H:2 * H]
            xp.add(n, tmp, out=hs[t + 1])
        self.final = (hs[T].copy(),)
        return hs[1:].reshape(T * B, H), (hs, act, hh, w_hh, b_hh is not None)

    def backward(self, saved, d_outputs):
        hs, act, hh, w_hh, has_bias = saved
        T, B, H = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
        d_outputs = d_outputs.reshape(T, B, H)
        gates = act.reshape(T, B, 3, H)
        r, z, n = gates[:, :, 0], gates[:, :, 1], gates[:, :, 2]
        to_n = xp.multiply(n, n)  # (1 - z)(1 - n^2): dh's way to n's pre-activation
        xp.subtract(1, to_n, out=to_n)
        to_n *= 1 - z
        factor = empty((T, B, 3, H), dtype=act.dtype)  # dq = factor * dh
        xp.multiply(gates[:, :, :2], gates[:, :, :2], out=factor[:, :, :2])
        xp.subtract(gates[:, :, :2], factor[:, :, :2], out=factor[:, :, :2])  # s(1 - s) for r and z
        factor[:, :, 0] *= hh[:, :, 2 * H:]
        factor[:, :, 0] *= to_n
        factor[:, :, 1] *= xp.subtract(hs[:-1], n)
        xp.multiply(to_n, r, out=factor[:, :, 2])
        if self.mode == "window":
            dq, dh_total, dh0 = self._window(factor, z, d_outputs, w_hh)
        else:
            dq, dh_total, dh0 = self._through_time(factor, z, d_outputs, w_hh)
        d_xin = empty((T, B, 3 * H), dtype=act.dtype)
        d_xin[:, :, :2 * H] = dq[:, :, :2 * H]
        xp.multiply(to_n, dh_total, out=d_xin[:, :, 2 * H:])
        rows = dq.reshape(T * B, 3 * H)
        dw = rows.T @ hs[:-1].reshape(T * B, H)
        db = rows.sum(axis=0) if has_bias else None
        return d_xin.reshape(T * B, 3 * H), dh0, dw, db

    def _through_time(self, factor, z, d_outputs, w_hh):
        """Full or chunked BPTT, newest step first; the gradient stops at chunk starts.

        Returns dq (T, B, 3H), the total dh at every step (T, B, H) and dh0.
        """
        T, B, _, H = factor.shape
        dtype = factor.dtype
        cut = self.truncate if self.mode == "chunk" and self.truncate else T
        dq = empty((T, B, 3 * H), dtype=dtype)
        dh_total = empty((T, B, H), dtype=dtype)
        dh_next = self._final_grad(0, (B, H), dtype)
        tmp = empty((B, H), dtype=dtype)
        dh0 = None
        for t in range(T - 1, -1, -1):
            dh = xp.add(d_outputs[t], dh_next, out=dh_total[t])
            xp.multiply(factor[t], dh[:, None, :], out=dq[t].reshape(B, 3, H))
            if t % cut:
                xp.matmul(dq[t], w_hh, out=dh_next)
                dh_next += xp.multiply(dh, z[t], out=tmp)
            else:  # the start of a chunk: the gradient stops here; h0 starts the first
                if self.mode == "full":
                    dh0 = dq[0] @ w_hh + dh * z[0]
                dh_next[...] = 0
        if dh0 is None:
            dh0 = zeros((B, H), dtype=dtype)
        return dq, dh_total, dh0

    def _window(self, factor, z, d_outputs, w_hh):
        """The tutorial's truncated paths, summed lag by lag (see LSTMSequence._window)."""
        T, B, _, H = factor.shape
        lags = _window_lags(T, self.truncate)
        dq = xp.multiply(factor, d_outputs[:, :, None, :]).reshape(T, B, 3 * H)  # lag 0
        dh_total = d_outputs.copy()
        lag, dh = dq, d_outputs
        for j in range(1, lags + 1):
            n = T - j
            dh = (lag[1:].reshape(-1, 3 * H) @ w_hh).reshape(n, B, H) + dh[1:] * z[1:n + 1]
            lag = xp.multiply(factor[:n], dh[:, :, None, :]).reshape(n, B, 3 * H)
            dq[:n] += lag
            dh_total[:n] += dh
        return dq, dh_total, dq[0] @ w_hh + dh_total[0] * z[0]


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
    "lstm": Cell("lstm", gates=4, state=("h", "c"), sequence=LSTMSequence, bptt_modes=BPTT_MODES,
                 summary="LSTM as torch.nn.LSTM: gates i, f, g, o; c_t = f*c_(t-1) + i*g, h_t = o*tanh(c_t)"),
    "gru": Cell("gru", gates=3, state=("h",), sequence=GRUSequence, bptt_modes=BPTT_MODES,
                summary="GRU as torch.nn.GRU: gates r, z, n; n = tanh(W_in x + b_in + r*(W_hn h + b_hn)), "
                        "h_t = (1-z)*n + z*h_(t-1)"),
}


def get_cell(name) -> Cell:
    """The registry's entry for ``name``; ``ValueError`` naming the choices otherwise."""
    if name not in CELLS:
        raise ValueError(f"cell {name!r} is not available; choose from: {', '.join(CELLS)}")
    return CELLS[name]
