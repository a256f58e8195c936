"""Optimisers, gradient clipping and learning-rate schedules.

Every optimiser updates a ``dict[str, ndarray]`` of parameters in place from a
gradient dict with the same keys and shapes, with the update formulas of
``torch.optim.SGD`` / ``Adagrad`` / ``Adam`` / ``RMSprop`` / ``AdamW``.
Per-parameter state (momentum, squared-gradient sums, moments) has the
parameter's shape and dtype, and ``state_dict`` splits it into arrays (for a
safetensors file) and JSON-able scalars.

A schedule changes ``optimizer.lr`` after each evaluation from the training
and validation losses: the tutorial's halving when the training loss rises,
word_language_model's division by 4 when the validation loss stops improving,
or nothing. Its state is JSON-able and names the schedule.
"""
from __future__ import annotations

import math

import numpy as np

from . import backend
from .row_grads import grad_norm  # the global L2 norm of a dict of gradients (arrays or sparse forms)
from .errors import CheckpointError


class Optimizer:
    """Base class: ``params`` is updated in place by ``step(grads)``.

    Subclasses set ``name``, ``slots`` (names of the per-parameter state
    arrays, each shaped like its parameter), ``hyper`` (names of the float
    hyperparameters besides ``lr``) and implement ``_update``.
    """

    name = ""
    slots: tuple[str, ...] = ()
    hyper: tuple[str, ...] = ()

    def __init__(self, params: dict[str, np.ndarray], lr: float):
        if lr < 0:
            raise ValueError(f"learning rate must be >= 0, not {lr}")
        self.params = params
        self.lr = float(lr)
        self.steps = 0
        self.state = {
            slot: {k: backend.zeros(p.shape, p.dtype) for k, p in params.items()}
            for slot in self.slots
        }

    def step(self, grads: dict[str, np.ndarray]) -> None:
        """Update every parameter in place; ``grads[k]`` has the shape of ``params[k]``."""
        self.steps += 1
        for k, p in self.params.items():
            self._update(p, grads[k], *(self.state[slot][k] for slot in self.slots))

    def _update(self, p, g, *slots) -> None:
        raise NotImplementedError

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict]:
        """``(arrays, meta)``: arrays named ``"<slot>.<param>"`` (copies), meta JSON-able."""
        arrays = {f"{slot}.{k}": a.copy() for slot, d in self.state.items() for k, a in d.items()}
        meta = {"name": self.name, "lr": self.lr, "steps": self.steps}
        meta.update({h: getattr(self, h) for h in self.hyper})
        return arrays, meta

    def load_state_dict(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """Restore what ``state_dict`` returned, hyperparameters and ``lr`` included.

        Raises CheckpointError when the state belongs to another optimiser or
        does not match the parameters' names and shapes.
        """
        if meta.get("name") != self.name:
            raise CheckpointError(f"optimizer state is for {meta.get('name')!r}, not {self.name!r}")
        expected = {f"{slot}.{k}" for slot, d in self.state.items() for k in d}
        if set(arrays) != expected:
            missing = sorted(expected - set(arrays)) or sorted(set(arrays) - expected)
            raise CheckpointError(f"optimizer state does not match the parameters (first: {missing[0]!r})")
        for slot, d in self.state.items():
            for k, a in d.items():
                saved = arrays[f"{slot}.{k}"]
                if saved.shape != a.shape:
                    raise CheckpointError(
                        f"optimizer state {slot}.{k} has shape {saved.shape}, parameter has {a.shape}"
                    )
                a[...] = saved
        self.lr = float(meta["lr"])
        self.steps = int(meta["steps"])
        for h in self.hyper:
            setattr(self, h, meta[h])


class SGD(Optimizer):
    """``torch.optim.SGD`` (dampening 0, no Nesterov): ``d = g + wd*p``; ``b = m*b + d``; ``p -= lr*b``."""

    name = "sgd"
    hyper = ("momentum", "weight_decay")

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self.slots = ("momentum_buffer",) if momentum else ()
        super().__init__(params, lr)

    @property
    def plain(self) -> bool:
        """No momentum and no weight decay: ``p -= lr * g``, which ``LanguageModel.sgd_step`` fuses."""
        return not self.momentum and not self.weight_decay

    def _update(self, p, g, buf=None):
        d = g + self.weight_decay * p if self.weight_decay else g
        if buf is not None:
            # torch starts the buffer at d; a zero buffer gives exactly that on step 1.
            buf *= self.momentum
            buf += d
            d = buf
        p -= self.lr * d


class Adagrad(Optimizer):
    """``torch.optim.Adagrad`` (no lr decay, accumulator starts at 0).

    ``s += g*g``; ``p -= lr * g / (sqrt(s) + eps)``.
    """

    name = "adagrad"
    slots = ("sum",)
    hyper = ("eps",)

    def __init__(self, params, lr: float, eps: float = 1e-10):
        self.eps = float(eps)
        super().__init__(params, lr)

    def _update(self, p, g, s):
        s += g * g
        p -= self.lr * g / (np.sqrt(s) + self.eps)


class Adam(Optimizer):
    """``torch.optim.Adam`` (no amsgrad, no weight decay), with bias correction."""

    name = "adam"
    slots = ("exp_avg", "exp_avg_sq")
    hyper = ("betas", "eps")

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8):
        self.betas = [float(b) for b in betas]
        self.eps = float(eps)
        super().__init__(params, lr)

    def _update(self, p, g, m, v):
        b1, b2 = self.betas
        m += (1 - b1) * (g - m)  # torch's lerp
        v *= b2
        v += (1 - b2) * g * g
        step_size = self.lr / (1 - b1**self.steps)
        denom = np.sqrt(v) / math.sqrt(1 - b2**self.steps) + self.eps
        p -= step_size * m / denom


class AdamW(Adam):
    """``torch.optim.AdamW``: Adam after a decoupled weight decay ``p *= 1 - lr*wd`` (default wd 0.01)."""

    name = "adamw"
    hyper = ("betas", "eps", "weight_decay")

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2):
        self.weight_decay = float(weight_decay)
        super().__init__(params, lr, betas, eps)

    def _update(self, p, g, m, v):
        p *= 1 - self.lr * self.weight_decay  # before the Adam step, on the parameter only
        super()._update(p, g, m, v)


class RMSprop(Optimizer):
    """``torch.optim.RMSprop`` (no momentum, not centered, no weight decay).

    ``v = alpha*v + (1 - alpha)*g*g``; ``p -= lr * g / (sqrt(v) + eps)``.
    """

    name = "rmsprop"
    slots = ("square_avg",)
    hyper = ("alpha", "eps")

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8):
        self.alpha = float(alpha)
        self.eps = float(eps)
        super().__init__(params, lr)

    def _update(self, p, g, v):
        v *= self.alpha
        v += (1 - self.alpha) * g * g
        p -= self.lr * g / (np.sqrt(v) + self.eps)


OPTIMIZERS = {
    "sgd": SGD,
    "momentum": lambda params, lr, **kw: SGD(params, lr, **{"momentum": 0.9, **kw}),
    "adagrad": Adagrad,
    "adam": Adam,
    "rmsprop": RMSprop,
    "adamw": AdamW,
}


def make_optimizer(name: str, params: dict[str, np.ndarray], lr: float, **kw) -> Optimizer:
    """The optimiser called ``name`` ("sgd", "momentum" = SGD with momentum 0.9, "adagrad", "adam",
    "rmsprop", "adamw"); ``kw`` are its hyperparameters."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](params, lr, **kw)


def clip_grad_norm(grads: dict[str, np.ndarray], max_norm: float) -> float:
    """Scale all gradients in place so their global L2 norm is at most ``max_norm``.

    Same as ``torch.nn.utils.clip_grad_norm_``: the factor is
    ``max_norm / (norm + 1e-6)``, applied when it is below 1. Returns the norm
    before clipping.
    """
    total = grad_norm(grads)
    coef = max_norm / (total + 1e-6)
    if coef < 1:
        for g in grads.values():
            g *= coef
    return total


class Schedule:
    """Base class: changes ``optimizer.lr`` after an evaluation.

    ``update(train_loss, valid_loss)`` records one evaluation's losses
    (``valid_loss`` None when there is no validation split) and returns
    whether the rate was cut. Subclasses set ``name`` (their key in
    ``SCHEDULES``) and ``fields`` (the attributes, each a float or None, that
    ``state_dict`` saves) and implement ``update``.
    """

    name = ""
    fields: tuple[str, ...] = ()
    reason = ""  # why it cuts, for the line that says so

    def __init__(self, optimizer: Optimizer):
        self.optimizer = optimizer

    def update(self, train_loss: float, valid_loss: float | None = None) -> bool:
        raise NotImplementedError

    def state_dict(self) -> dict:
        """JSON-able: ``{"name": ..., <field>: ...}``."""
        return {"name": self.name, **{f: getattr(self, f) for f in self.fields}}

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned.

        Raises CheckpointError when the state belongs to another schedule. A
        state without a name was saved before schedules had names, when
        "halve-on-rise" was the only one.
        """
        if not isinstance(state, dict):
            raise CheckpointError(f"schedule state is a {type(state).__name__}, not a JSON object")
        saved = state.get("name", "halve-on-rise")
        if saved != self.name:
            raise CheckpointError(f"schedule state is for {saved!r}, not {self.name!r}")
        for f in self.fields:
            setattr(self, f, None if state[f] is None else float(state[f]))


class LossHalvingSchedule(Schedule):
    """The tutorial's rule: ``lr *= factor`` (default 0.5) whenever the training loss exceeds the previous one.

    The validation loss plays no part. ``update(train_loss)`` (one argument) works too.
    """

    name = "halve-on-rise"
    fields = ("factor", "previous")
    reason = "the training loss rose"

    def __init__(self, optimizer: Optimizer, factor: float = 0.5):
        super().__init__(optimizer)
        self.factor = float(factor)
        self.previous: float | None = None

    def update(self, train_loss: float, valid_loss: float | None = None) -> bool:
        """Record the latest evaluation's training loss; return whether the rate was cut."""
        loss = float(train_loss)
        cut = self.previous is not None and loss > self.previous
        if cut:
            self.optimizer.lr *= self.factor
        self.previous = loss
        return cut


class PlateauSchedule(Schedule):
    """word_language_model's rule: ``lr *= factor`` (default 0.25, its ``lr /= 4``) after every
    evaluation whose loss is not below the best so far.

    The loss is the validation loss; with ``valid_loss`` None (no validation
    split) it is the training loss instead. A tie with the best cuts; the first
    evaluation (best = +inf) cuts only if its loss is not below +inf (inf or
    NaN). This is ``torch.optim.lr_scheduler.ReduceLROnPlateau(mode="min",
    factor=factor, patience=0, threshold=0)``, except that torch never goes
    below its ``min_lr`` and skips cuts smaller than its ``eps`` (1e-8).
    """

    name = "plateau"
    fields = ("factor", "best")
    reason = "the loss did not improve on its best"

    def __init__(self, optimizer: Optimizer, factor: float = 0.25):
        if not 0 < factor <= 1:
            raise ValueError(f"plateau factor must be in (0, 1], not {factor}")
        super().__init__(optimizer)
        self.factor = float(factor)
        self.best: float | None = None  # None: no evaluation yet (+inf, kept JSON-able)

    def update(self, train_loss: float, valid_loss: float | None = None) -> bool:
        """Record the latest evaluation (``valid_loss``, else ``train_loss``); return whether the rate was cut."""
        loss = float(train_loss if valid_loss is None else valid_loss)
        if loss < (math.inf if self.best is None else self.best):
            self.best = loss
            return False
        self.optimizer.lr *= self.factor
        return True


class ConstantSchedule(Schedule):
    """The "none" schedule: the learning rate never changes."""

    name = "none"

    def update(self, train_loss: float, valid_loss: float | None = None) -> bool:
        return False


SCHEDULES = {
    "halve-on-rise": LossHalvingSchedule,
    "plateau": PlateauSchedule,
    "none": ConstantSchedule,
}
SCHEDULE_AT = ("epoch", "eval")  # which evaluations a schedule sees: epoch ends only, or every one


def make_schedule(name: str, optimizer: Optimizer, **kw) -> Schedule:
    """The schedule called ``name`` (a key of ``SCHEDULES``) on ``optimizer``; ``kw``: e.g. ``factor``."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    return SCHEDULES[name](optimizer, **kw)
