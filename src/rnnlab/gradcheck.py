"""Finite-difference checks of every gate, composite gate and the model.

One generic checker: for a function ``f`` of arrays, the analytic gradient
``g`` is compared with centred differences ``(f(x + h e_i) - f(x - h e_i)) / 2h``
in float64, element by element (or on a random sample of elements for large
arrays). The error reported for an array is ``max |g - fd| / max |g|`` over its
checked entries: relative to the array's scale, so that entries that are zero
or tiny do not turn rounding noise into a failure.

``rnnlab gradcheck`` runs ``run_all`` on small random models and prints the
worst relative error for each parameter and BPTT mode.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import cells, gates, output, two_level
from .model import LanguageModel

TOLERANCE = 1e-6


def relative_error(analytic, numeric, floor=1e-12):
    """max |analytic - numeric| / max(|analytic|, |numeric|), 0 for empty arrays."""
    analytic = np.asarray(analytic, dtype=np.float64)
    numeric = np.asarray(numeric, dtype=np.float64)
    if not analytic.size:
        return 0.0
    scale = max(np.abs(analytic).max(), np.abs(numeric).max(), floor)
    return float(np.abs(analytic - numeric).max() / scale)


def numeric_grad(f, x, eps=1e-5, max_entries=None, seed=0):
    """Centred differences of the scalar ``f()`` w.r.t. the array ``x``, changed in place.

    Returns (flat indices checked, their numeric gradients).
    """
    flat = x.reshape(-1)
    idx = np.arange(flat.size)
    if max_entries is not None and flat.size > max_entries:
        idx = np.sort(np.random.default_rng(seed).choice(flat.size, max_entries, replace=False))
    out = np.empty(len(idx))
    for n, i in enumerate(idx):
        old = flat[i]
        flat[i] = old + eps
        up = f()
        flat[i] = old - eps
        down = f()
        flat[i] = old
        out[n] = (up - down) / (2 * eps)
    return idx, out


def check_function(f, arrays: dict, analytic: dict, max_entries=None, eps=1e-5) -> dict:
    """Worst relative error per named array: ``analytic[name]`` vs differences of ``f()``."""
    errors = {}
    for name, array in arrays.items():
        idx, numeric = numeric_grad(f, array, eps, max_entries)
        errors[name] = relative_error(np.asarray(analytic[name]).reshape(-1)[idx], numeric)
    return errors


def check_gate(gate, inputs, differentiable, seed=0):
    """Check ``gate.backward`` against differences of ``sum(dy * forward(inputs))``.

    inputs: list of arrays (float64 for the differentiable ones); differentiable:
    the indices of inputs to check. Returns {"input i": worst relative error}.
    """
    gen = np.random.default_rng(seed)
    y, saved = gate.forward(*inputs)
    dy = gen.standard_normal(np.shape(y))
    grads = gate.backward(saved, dy if np.ndim(y) else float(dy))

    def f():
        return float(np.sum(dy * gate.forward(*inputs)[0]))

    named = {f"input {i}": inputs[i] for i in differentiable}
    analytic = {f"input {i}": grads[i] for i in differentiable}
    return check_function(f, named, analytic)


def gate_cases(seed=0):
    """(label, gate, inputs, differentiable indices) for every primitive and composite gate."""
    gen = np.random.default_rng(seed)

    def r(*shape):
        return gen.standard_normal(shape)

    T, B, H, V, E = 4, 3, 5, 7, 6
    ids = gen.integers(0, V, T * B)
    targets = gen.integers(0, V, T * B)
    weights = gen.random(T * B)
    away_from_zero = r(B, H) + np.sign(r(B, H)) * 0.1
    cases = [
        ("MatMul", gates.MatMul(), [r(B, E), r(H, E)], [0, 1]),
        ("Add", gates.Add(), [r(B, H), r(B, H)], [0, 1]),
        ("BiasAdd", gates.BiasAdd(), [r(B, H), r(H)], [0, 1]),
        ("Mul", gates.Mul(), [r(B, H), r(B, H)], [0, 1]),
        ("Tanh", gates.Tanh(), [r(B, H)], [0]),
        ("Sigmoid", gates.Sigmoid(), [r(B, H) * 3], [0]),
        ("Relu", gates.Relu(), [away_from_zero], [0]),
        ("Dropout", gates.Dropout(), [r(B, H), gates.dropout_mask(gen, (B, H), 0.4, np.dtype(np.float64))], [0]),
        ("Embedding", gates.Embedding(), [r(V, E), ids], [0]),
        ("SoftmaxCE", gates.SoftmaxCE(), [r(T * B, V), targets, weights], [0]),
        ("RNNStep", cells.RNNStep(), [r(B, H), r(B, H), r(H, H) * 0.5, r(H)], [0, 1, 2, 3]),
        ("LinearSoftmaxCE", output.LinearSoftmaxCE(), [r(T * B, H), r(V, H), r(V), targets, weights],
         [0, 1, 2]),
    ]
    # Truncated modes are not plain gradients of the gate's output; they are
    # checked on the model (``truncated_loss``). Untruncated, window equals full.
    for mode, truncate in (("full", None), ("window", T)):
        cases.append((f"RNNSequence[{mode}]", cells.RNNSequence(T, mode, truncate),
                      [r(T * B, H), r(B, H), r(H, H) * 0.5, r(H)], [0, 1, 2, 3]))
        cases.append((f"LSTMSequence[{mode}]", cells.LSTMSequence(T, mode, truncate),
                      [r(T * B, 4 * H), r(B, H), r(B, H), r(4 * H, H) * 0.5, r(4 * H)], [0, 1, 2, 3, 4]))
        cases.append((f"GRUSequence[{mode}]", cells.GRUSequence(T, mode, truncate),
                      [r(T * B, 3 * H), r(B, H), r(3 * H, H) * 0.5, r(3 * H)], [0, 1, 2, 3]))
    # The two-level softmax: classes (two merged into one block, one of a single word) over 12
    # ids, and the adaptive layer's shortlist and two projected clusters over 9; some weights 0.
    masked = weights * (gen.random(T * B) < 0.75)
    classes = two_level.Layout((0, 2, 4, 5, 12), projected=False)
    cases.append(("TwoLevelSoftmaxCE[class]", two_level.TwoLevelSoftmaxCE(classes),
                  [r(T * B, H), r(4, H), r(4), gen.integers(0, 12, T * B), masked, r(12, H), r(12)],
                  [0, 1, 2, 5, 6]))
    clusters = two_level.Layout((3, 5, 9), projected=True)
    cases.append(("TwoLevelSoftmaxCE[adaptive]", two_level.TwoLevelSoftmaxCE(clusters),
                  [r(T * B, H), r(5, H), r(5), gen.integers(0, 9, T * B), masked,
                   r(2, H), r(2, 2), r(1, H), r(4, 1)], [0, 1, 2, 5, 6, 7, 8]))
    return cases


# The inputs of each gate, in order, as run_all names them (by the label, or the label's gate name).
INPUT_NAMES = {
    "MatMul": ("x", "weight"), "Add": ("a", "b"), "BiasAdd": ("x", "bias"), "Mul": ("a", "b"),
    "Tanh": ("x",), "Sigmoid": ("x",), "Relu": ("x",), "Dropout": ("x", "mask"), "Embedding": ("table", "ids"),
    "SoftmaxCE": ("logits", "targets", "weights"), "RNNStep": ("xin", "h_prev", "w_hh", "b_hh"),
    "LinearSoftmaxCE": ("hidden", "weight", "bias", "targets", "weights"),
    "TwoLevelSoftmaxCE[class]": ("hidden", "class_weight", "class_bias", "targets", "weights",
                                 "word_weight", "word_bias"),
    "TwoLevelSoftmaxCE[adaptive]": ("hidden", "head_weight", "head_bias", "targets", "weights",
                                    "projection_0", "words_0", "projection_1", "words_1"),
    "RNNSequence": ("xin", "h0", "w_hh", "b_hh"),
    "LSTMSequence": ("xin", "h0", "c0", "w_hh", "b_hh"),
    "GRUSequence": ("xin", "h0", "w_hh", "b_hh"),
}


@dataclass
class ModelCase:
    label: str
    model: LanguageModel
    bptt: str
    truncate: int | None
    masked: bool


def model_cases(seed=0, cells=None):
    """Small float64 models covering the layouts and every BPTT mode, with and without a mask:
    the tanh RNN in three layouts, the LSTM and the GRU in two (no embedding layer, one layer;
    an embedding layer and two layers). ``cells``: only these cells' models (None: all)."""
    layouts = [
        ("tutorial", dict(embed_size=None, bias=False)),
        ("embed+bias", dict(embed_size=4, bias=True)),
        ("embed+bias, 2 layers", dict(embed_size=4, bias=True, num_layers=2)),
    ]
    for cell in ("lstm", "gru"):
        layouts += [
            (f"{cell}, no embed, bias", dict(cell=cell, embed_size=None, bias=True)),
            (f"{cell}, embed+bias, 2 layers", dict(cell=cell, embed_size=4, bias=True, num_layers=2)),
        ]
    layouts += [  # the output layers that cut the vocabulary (a class of one word among them)
        ("class, embed+bias, 2 layers",
         dict(embed_size=4, bias=True, num_layers=2, softmax="class", cutoffs=(2, 3, 7))),
        ("lstm, adaptive, 2 layers",
         dict(cell="lstm", embed_size=4, bias=True, num_layers=2, softmax="adaptive", cutoffs=(3, 7),
              div_value=2.0, head_bias=True)),
    ]
    out = []
    for label, kw in layouts:
        if cells is not None and kw.get("cell", "rnn") not in cells:
            continue
        model = LanguageModel(11, 5, dtype="float64", seed=seed, **kw)
        if kw.get("cell") and kw["embed_size"]:
            # embedding and decoder at +-0.5 and +-1, not +-0.1: through a gated cell's two
            # layers the first layer's gradients are otherwise ~1e-4 of the loss, and the
            # differences' rounding noise (~1e-11) comes within a few times the tolerance
            model.params["encoder.weight"] *= 5
            for name in model.output.param_shapes():
                if not name.endswith(".bias"):
                    model.params[name] *= 10
        for bptt, truncate in (("full", None), ("chunk", 3), ("window", 2)):
            if bptt == "window" and model.config.num_layers > 1:
                continue
            for masked in (False, True):
                out.append(ModelCase(label, model, bptt, truncate, masked))
    return out


def check_model(case: ModelCase, T=7, B=3, seed=0, max_entries=60):
    """Worst relative error of every parameter's gradient for one model case."""
    gen = np.random.default_rng(seed)
    model = case.model
    V = model.vocab_size
    inputs = gen.integers(0, V, (T, B))
    targets = gen.integers(0, V, (T, B))
    mask = (gen.random((T, B)) < 0.7).astype(np.float64) if case.masked else None
    cell = model.config.cell_type
    hidden = cell.hidden(tuple(gen.standard_normal((model.config.num_layers, B, model.hidden_size)) * 0.5
                               for _ in cell.state))  # an array, or a tuple (h, c) for the LSTM
    kwargs = dict(mask=mask, bptt=case.bptt, truncate=case.truncate, hidden=hidden)
    result = model.loss_and_grads(inputs, targets, **kwargs)
    frozen = frozen_states(model, inputs, hidden)

    def f():  # forward only; full BPTT is one chunk of all T steps
        bptt, truncate = ("chunk", T) if case.bptt == "full" else (case.bptt, case.truncate)
        return truncated_loss(model, inputs, targets, mask=mask, bptt=bptt, truncate=truncate, frozen=frozen)

    return check_function(f, model.params, result.grads, max_entries=max_entries)


def truncated_loss(model, inputs, targets, *, mask, bptt, truncate, frozen):
    """A loss whose plain gradient equals the truncated BPTT gradient at the current weights.

    Truncation means the gradient of a loss term stops at some hidden state
    ``s`` and treats it as a constant. Evaluated by finite differences, that
    is the loss computed with ``s`` frozen at its value under the unperturbed
    weights (``frozen``, from ``frozen_states``): chunk mode restarts every chunk from the frozen
    state at its boundary; window mode evaluates the loss at step t by running
    the last ``truncate + 1`` steps from the frozen state before them.
    """
    T, B = inputs.shape
    w = np.ones((T, B)) if mask is None else (np.asarray(mask) != 0).astype(np.float64)
    w = w / max(w.sum(), 1)
    K = T if truncate is None else truncate  # a window of 0 steps is a window
    total = 0.0
    if bptt == "chunk":
        for lo in range(0, T, K):
            nll, _ = model.nll(inputs[lo:lo + K], targets[lo:lo + K], hidden=frozen[lo])
            total += float((w[lo:lo + K] * nll).sum())
        return total
    for t in range(T):  # window
        lo = max(0, t - K)
        nll, _ = model.nll(inputs[lo:t + 1], targets[lo:t + 1], hidden=frozen[lo])
        total += float((w[t] * nll[-1]).sum())
    return total


def frozen_states(model, inputs, hidden):
    """The carried state before each step, a list of T + 1 as the model hands it out: (layers, B, H)
    arrays, or tuples of them for a cell with several state parts (the LSTM's (h, c))."""
    states = [hidden]
    for t in range(inputs.shape[0]):
        states.append(model.nll(inputs[t:t + 1], inputs[t:t + 1], hidden=states[-1])[1])
    return states


def run_all(seed=0, tol=TOLERANCE, emit=print, cells=None):
    """Check every gate and every model case (``cells``: only these cells' models); print a line
    each; True when all pass."""
    ok = True
    emit(f"{'check':<58} {'worst rel. error':>16}  result")
    emit(f"(error: max |analytic - finite difference| / max |analytic| over each array; pass below {tol:g})")
    for label, gate, inputs, diff in gate_cases(seed):
        names = INPUT_NAMES.get(label) or INPUT_NAMES[label.split("[")[0]]
        for name, err in check_gate(gate, inputs, diff, seed).items():
            passed = err < tol
            ok &= passed
            what = f"gate {label} d/d{names[int(name.split()[1])]}"
            emit(f"{what:<58} {err:16.2e}  {'ok' if passed else 'FAIL'}")
    for case in model_cases(seed, cells):
        errors = check_model(case, seed=seed)
        for name, err in errors.items():
            passed = err < tol
            ok &= passed
            mode = f"{case.bptt}" + (f"/{case.truncate}" if case.truncate else "")
            mode += " masked" if case.masked else ""
            what = f"model {mode} {name} [{case.label}]"
            emit(f"{what:<58} {err:16.2e}  {'ok' if passed else 'FAIL'}")
    emit("all gradients agree with finite differences" if ok else "SOME GRADIENTS DISAGREE")
    return ok
