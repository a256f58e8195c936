"""The class-based output layer (to be written)."""
from __future__ import annotations

from .output import OutputLayer


class ClassSoftmax(OutputLayer):
    """p(w | h) = p(class(w) | h) p(w | class(w), h)."""
