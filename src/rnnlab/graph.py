"""The tape: records the gates applied in a forward pass and runs backward through them.

A forward pass calls ``tape.apply(gate, *inputs)`` for every gate; each call
appends one record. ``tape.backward(loss)`` walks the records in reverse and
hands each gate the gradient of its output. A parameter used at many time
steps receives one gradient per use; they are summed into ``Node.grad``,
which is exactly BPTT's sum over time.
"""
from __future__ import annotations

from dataclasses import dataclass, field


class Node:
    """A value in the graph: a parameter, a constant, or a gate's output."""

    __slots__ = ("value", "grad", "requires_grad", "name")

    def __init__(self, value, requires_grad=True, name=None):
        self.value = value
        self.grad = None
        self.requires_grad = requires_grad
        self.name = name

    def __repr__(self):
        shape = getattr(self.value, "shape", ())
        return f"Node({self.name or '?'}, shape={shape})"


@dataclass
class Tape:
    records: list = field(default_factory=list)

    def param(self, value, name=None) -> Node:
        """A leaf whose gradient is wanted."""
        return Node(value, True, name)

    def constant(self, value, name=None) -> Node:
        """A leaf with no gradient (token ids, targets, mask weights)."""
        return Node(value, False, name)

    def apply(self, gate, *inputs) -> Node:
        """Run ``gate.forward`` on the inputs' values and record it.

        Inputs may be nodes or plain arrays (taken as constants).
        """
        nodes = [x if isinstance(x, Node) else Node(x, False) for x in inputs]
        value, saved = gate.forward(*(n.value for n in nodes))
        out = Node(value, any(n.requires_grad for n in nodes), type(gate).__name__)
        if out.requires_grad:
            self.records.append((gate, nodes, saved, out))
        return out

    def backward(self, loss: Node, seed=1.0):
        """Reverse pass from a scalar ``loss``: fills ``.grad`` of every node it reaches."""
        loss.grad = seed
        for gate, inputs, saved, out in reversed(self.records):
            if out.grad is None:
                continue
            grads = gate.backward(saved, out.grad)
            for node, grad in zip(inputs, grads):
                if grad is None or not node.requires_grad:
                    continue
                node.grad = grad if node.grad is None else node.grad + grad
        self.records.clear()
