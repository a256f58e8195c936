"""The adaptive output layer (to be written)."""
from __future__ import annotations

from .output import OutputLayer


class AdaptiveSoftmax(OutputLayer):
    """torch.nn.AdaptiveLogSoftmaxWithLoss's layer."""
