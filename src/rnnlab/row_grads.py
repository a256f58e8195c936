"""Gradients that are zero outside some rows of their parameter, and the clipped SGD step on them.

A word-level model's largest parameters are (V, H) tables, and a batch
touches few of their rows: the encoder's gradient is nonzero only at the
batch's input tokens (a few hundred of V), the class layer's word table's
only at the words of the batch's target classes. Formed densely, such a
gradient costs a (V, H) array filled with zeros, its norm and its step:
three passes over V rows, most of them zeros. Two sparse forms hold only the
rows that can be nonzero:

* ``RowsAt``: values (R, ...) at distinct row ids (R,), in any order (the
  encoder's, summed per distinct input token by ``gates.sum_rows``);
* ``RowRanges``: blocks of consecutive rows, block k (n_k, ...) at rows
  starts[k]:starts[k] + n_k, ranges disjoint (the class layer's, one block
  per product of its tail).

``grad_norm`` (also ``optim``'s) and ``clipped_sgd_step`` take a dict mixing
arrays and these forms; the step is that of ``optim.clip_grad_norm`` and
plain ``optim.SGD``.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .backend import xp, zeros


class RowsAt(NamedTuple):
    """A gradient of a parameter shaped ``shape``, nonzero only at rows ``ids`` (R,), all
    distinct, where it is ``values`` (R, *shape[1:])."""

    shape: tuple
    ids: object
    values: object

    def norm(self) -> float:
        return float(xp.linalg.norm(self.values.ravel()))

    def scale(self, factor) -> None:
        """Multiply in place."""
        xp.multiply(self.values, factor, out=self.values)

    def subtract_from(self, param, lr) -> None:
        """param -= lr * self, in place, at the gradient's rows only."""
        param[self.ids] -= lr * self.values

    def dense(self):
        out = zeros(self.shape, dtype=self.values.dtype)
        out[self.ids] = self.values
        return out

    def __mul__(self, factor) -> "RowsAt":
        return self._replace(values=self.values * factor)


class RowRanges(NamedTuple):
    """A gradient of a parameter shaped ``shape`` (of ``dtype``), nonzero only in disjoint ranges
    of rows: ``blocks[k]`` (n_k, *shape[1:]) at rows starts[k]:starts[k] + n_k."""

    shape: tuple
    dtype: object
    starts: list
    blocks: list

    def norm(self) -> float:
        return float(np.sqrt(sum(float(xp.linalg.norm(b.ravel())) ** 2 for b in self.blocks)))

    def scale(self, factor) -> None:
        """Multiply in place."""
        for b in self.blocks:
            b *= factor

    def subtract_from(self, param, lr) -> None:
        """param -= lr * self, in place, in the gradient's ranges only."""
        for lo, b in zip(self.starts, self.blocks):
            param[lo:lo + len(b)] -= lr * b

    def dense(self):
        out = zeros(self.shape, dtype=self.dtype)
        for lo, b in zip(self.starts, self.blocks):
            out[lo:lo + len(b)] = b
        return out

    def __mul__(self, factor) -> "RowRanges":
        return self._replace(blocks=[b * factor for b in self.blocks])


SPARSE = (RowsAt, RowRanges)


def dense(grad):
    """The gradient as an array (a sparse form's zeros filled in)."""
    return grad.dense() if isinstance(grad, SPARSE) else grad


def grad_norm(grads: dict) -> float:
    """The global L2 norm of all gradients together, as ``torch.nn.utils.clip_grad_norm_``
    takes it (the norm of the per-parameter norms); arrays or sparse forms."""
    norms = [g.norm() if isinstance(g, SPARSE) else xp.linalg.norm(g.ravel()) for g in grads.values()]
    return float(xp.linalg.norm(norms)) if norms else 0.0


def clipped_sgd_step(params: dict, grads: dict, lr: float, max_norm: float, grad_scale: float = 1.0) -> float:
    """``grads`` times ``grad_scale``, clipped to the global norm ``max_norm`` (0: not clipped)
    as ``optim.clip_grad_norm``, then ``params[k] -= lr * grads[k]`` in place; returns the norm
    (of the scaled gradients) before clipping.

    The step of ``optim.clip_grad_norm`` then plain ``optim.SGD`` on the
    dense gradients, up to rounding: the clipping factor and the rate are
    applied as one product. ``grads`` (arrays or sparse forms) are scaled in
    place, and a parameter absent from ``grads`` has no gradient.
    """
    if grad_scale != 1:
        for g in grads.values():
            g.scale(grad_scale) if isinstance(g, SPARSE) else xp.multiply(g, grad_scale, out=g)
    total = grad_norm(grads)
    coef = max_norm / (total + 1e-6)
    rate = lr * coef if max_norm and coef < 1 else lr
    for name, g in grads.items():
        if isinstance(g, SPARSE):
            g.subtract_from(params[name], rate)
        else:
            params[name] -= xp.multiply(g, rate, out=g)
    return total
