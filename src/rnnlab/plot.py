"""``loss.png``: training and validation loss of a run, from its metrics lines.

Drawn with matplotlib's object API on the Agg canvas (no pyplot, no global
backend switch, no display needed) and written atomically, so a reader never
sees a half-written image.
"""
from __future__ import annotations

import os
from pathlib import Path

from .atomic import atomic_write


def plot_losses(metrics: list[dict], path: str | os.PathLike, *, title: str | None = None) -> Path | None:
    """Plot ``train_loss`` and ``valid_loss`` of ``metrics`` against ``epoch`` into ``path`` (PNG).

    ``metrics`` are the dicts of ``metrics.jsonl``; a missing or null loss is
    left out of its curve. Returns the path, or None when matplotlib is not
    installed (the plot is optional; the numbers are in ``metrics.jsonl``).
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for key, label, style in (("train_loss", "train", "o-"), ("valid_loss", "validation", "s--")):
        points = [(m["epoch"], m[key]) for m in metrics if m.get(key) is not None]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, style, label=label, markersize=3)
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean loss per token (nats)")
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    path = Path(path)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png")
    return path
