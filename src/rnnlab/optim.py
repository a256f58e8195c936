"""Optimisers, gradient clipping and the tutorial's learning-rate schedule.

Every optimiser updates a ``dict[str, ndarray]`` of parameters in place from a
gradient dict with the same keys and shapes, with the update formulas of
``torch.optim.SGD`` / ``Adagrad`` / ``Adam``. Per-parameter state (momentum,
squared-gradient sums, moments) has the parameter's shape and dtype, and
``state_dict`` splits it into arrays (for a safetensors file) and JSON-able
scalars.
"""
from __future__ import annotations

import math

import numpy as np

from . import backend
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


OPTIMIZERS = {
    "sgd": SGD,
    "momentum": lambda params, lr, **kw: SGD(params, lr, **{"momentum": 0.9, **kw}),
    "adagrad": Adagrad,
    "adam": Adam,
}


def make_optimizer(name: str, params: dict[str, np.ndarray], lr: float, **kw) -> Optimizer:
    """The optimiser called ``name`` ("sgd", "momentum" = SGD with momentum 0.9, "adagrad", "adam")."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](params, lr, **kw)


def clip_grad_norm(grads: dict[str, np.ndarray], max_norm: float) -> float:
    """Scale all gradients in place so their global L2 norm is at most ``max_norm``.

    Same as ``torch.nn.utils.clip_grad_norm_``: the factor is
    ``max_norm / (norm + 1e-6)``, applied when it is below 1. Returns the norm
    before clipping.
    """
    norms = [np.linalg.norm(g.ravel()) for g in grads.values()]
    total = float(np.linalg.norm(norms)) if norms else 0.0
    coef = max_norm / (total + 1e-6)
    if coef < 1:
        for g in grads.values():
            g *= coef
    return total


class LossHalvingSchedule:
    """Halve ``optimizer.lr`` (times ``factor``) whenever an evaluation loss exceeds the previous one."""

    def __init__(self, optimizer: Optimizer, factor: float = 0.5):
        self.optimizer = optimizer
        self.factor = float(factor)
        self.previous: float | None = None

    def update(self, loss: float) -> bool:
        """Record the loss of the latest evaluation; return whether the rate was cut."""
        loss = float(loss)
        cut = self.previous is not None and loss > self.previous
        if cut:
            self.optimizer.lr *= self.factor
        self.previous = loss
        return cut

    def state_dict(self) -> dict:
        return {"factor": self.factor, "previous": self.previous}

    def load_state_dict(self, state: dict) -> None:
        self.factor = float(state["factor"])
        self.previous = state["previous"]
