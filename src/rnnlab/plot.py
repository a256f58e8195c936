"""Plots of training runs and of their diagnostics, as PNG files.

* ``plot_losses``: ``loss.png`` of one run, training and validation loss
  against the epoch, learning-rate changes and resumes marked;
* ``plot_runs``: the validation (solid) and training (dashed) curves of
  several runs on one plot, against tokens, time or steps;
* ``plot_gradient_lags``: ``diagnose``'s gradient ratio against the lag, one
  line per model (dashed: the LSTM's memory cell), the threshold drawn.

Drawn with matplotlib's object API on the Agg canvas (no pyplot, no global
backend switch, no display needed) and written atomically, so a reader never
sees a half-written image. Each ``plot_*`` returns None when matplotlib is
not installed (the plots are optional; the numbers are in metrics.jsonl);
the ``*_figure`` functions build the figure itself, for tests and callers
that draw more on it.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from .atomic import atomic_write
from .rundir import EVENT_KEY

RUN_X = {"tokens": "tokens", "time": "time (s)", "step": "step", "epoch": "epoch"}
RUN_Y = {"loss": "mean loss per token (nats)", "perplexity": "perplexity"}


def _new_figure(size=(6.4, 4.0)):
    """An empty Figure on an Agg canvas and its one Axes (ImportError without matplotlib)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _finish(fig, ax, title):
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()


def _save(make_figure, path) -> Path | None:
    """Build the figure (None without matplotlib) and write it to ``path`` atomically as PNG."""
    try:
        fig = make_figure()
    except ImportError:
        return None
    path = Path(path)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png")
    return path


# -- one run ---------------------------------------------------------------------------


def _evaluations(metrics):
    return [row for row in metrics if EVENT_KEY not in row]


def lr_changes(metrics: list[dict]) -> list[tuple]:
    """(epoch, new rate) wherever the learning rate of an evaluation differs from the one before it.

    A row holds the rate it was evaluated at; a schedule that changes it at
    that evaluation shows in the next row. The change is placed at the
    earlier row's epoch, where the new rate took over.
    """
    rows = [row for row in _evaluations(metrics) if row.get("lr") is not None and row.get("epoch") is not None]
    return [(before["epoch"], after["lr"]) for before, after in zip(rows, rows[1:]) if after["lr"] != before["lr"]]


def resumes(metrics: list[dict]) -> list:
    """The epochs at which the run was resumed (rows ``{"event": "resume", "epoch": ...}``)."""
    return [row["epoch"] for row in metrics if row.get(EVENT_KEY) == "resume" and row.get("epoch") is not None]


def losses_figure(metrics: list[dict], *, title: str | None = None, markers: bool = True):
    """The Figure of ``plot_losses``. Marker lines carry the gid "lr-change" or "resume"."""
    fig, ax = _new_figure()
    rows = _evaluations(metrics)
    for key, label, style in (("train_loss", "train", "o-"), ("valid_loss", "validation", "s--")):
        points = [(m["epoch"], m[key]) for m in rows if m.get(key) is not None]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, style, label=label, markersize=3)
    if markers:
        for i, (epoch, lr) in enumerate(lr_changes(metrics)):
            line = ax.axvline(epoch, color="0.45", linestyle=":", linewidth=1,
                              label="learning rate changed" if i == 0 else None)
            line.set_gid("lr-change")
            ax.annotate(f"lr {lr:.3g}", (epoch, 1.0), xycoords=("data", "axes fraction"), xytext=(2, -10),
                        textcoords="offset points", fontsize=7, color="0.35")
        for i, epoch in enumerate(resumes(metrics)):
            line = ax.axvline(epoch, color="tab:red", linestyle="-.", linewidth=1, alpha=0.7,
                              label="resumed" if i == 0 else None)
            line.set_gid("resume")
    ax.set_xlabel("epoch")
    ax.set_ylabel(RUN_Y["loss"])
    _finish(fig, ax, title)
    return fig


def plot_losses(metrics: list[dict], path: str | os.PathLike, *, title: str | None = None,
                markers: bool = True) -> Path | None:
    """Plot ``train_loss`` and ``valid_loss`` of ``metrics`` against ``epoch`` into ``path`` (PNG).

    ``metrics`` are the dicts of ``metrics.jsonl``; a missing or null loss is
    left out of its curve, and event rows (a resume, a test score) are not
    evaluations. With ``markers``, learning-rate changes (dotted, the new
    rate written at the top) and resumes (dash-dotted) are drawn as vertical
    lines where the rows show them. Returns the path, or None when
    matplotlib is not installed.
    """
    return _save(lambda: losses_figure(metrics, title=title, markers=markers), path)


# -- several runs ----------------------------------------------------------------------------


def elapsed_seconds(metrics: list[dict]) -> list:
    """Training time at each evaluation row (seconds from the first row), the pauses before resumes left out.

    From the rows' ``wall_time``; a row without one (older runs) counts
    its tokens since the previous row at its ``tokens_per_s``. None where
    neither tells.
    """
    elapsed, total, last_wall, last_tokens = [], 0.0, None, None
    known = True
    for row in metrics:
        wall, tokens = row.get("wall_time"), row.get("tokens")
        if row.get(EVENT_KEY) == "resume":  # the time the run was stopped does not count
            last_wall, last_tokens = wall, tokens
            continue
        if EVENT_KEY in row:
            continue
        if last_tokens is not None or last_wall is not None:  # every row but the first adds its interval
            if wall is not None and last_wall is not None:
                total += wall - last_wall
            elif row.get("tokens_per_s") and tokens is not None and last_tokens is not None:
                total += (tokens - last_tokens) / row["tokens_per_s"]
            elif tokens != last_tokens:
                known = False
        elapsed.append(total if known else None)
        last_wall, last_tokens = wall, tokens
    return elapsed


def _run_points(rows, key, x, y, times):
    """(xs, ys) of one curve: ``key`` ("valid" or "train") of the evaluation rows."""
    points = []
    for row, seconds in zip(rows, times):
        loss = row.get(f"{key}_loss")
        where = seconds if x == "time" else row.get(x)
        if loss is None or where is None:
            continue
        if y == "loss":
            points.append((where, loss))
        elif key == "valid" and row.get("perplexity") is not None:
            points.append((where, row["perplexity"]))
        else:
            points.append((where, math.exp(min(loss, 700.0))))
    return points


def runs_figure(runs, *, y: str = "loss", x: str = "tokens", labels=None, title: str | None = None):
    """The Figure of ``plot_runs``: one color per run; validation lines carry the gid "valid", training "train"."""
    if y not in RUN_Y:
        raise ValueError(f"y must be one of {', '.join(RUN_Y)}, not {y!r}")
    if x not in RUN_X:
        raise ValueError(f"x must be one of {', '.join(RUN_X)}, not {x!r}")
    runs = [run if isinstance(run, tuple) else (None, run) for run in runs]
    if labels is not None:
        if len(labels) != len(runs):
            raise ValueError(f"{len(labels)} labels for {len(runs)} runs")
        runs = [(label, rows) for label, (_, rows) in zip(labels, runs)]
    fig, ax = _new_figure((7.2, 4.5))
    for i, (label, metrics) in enumerate(runs):
        label = label or f"run {i + 1}"
        color = f"C{i % 10}"
        rows = _evaluations(metrics)
        times = elapsed_seconds(metrics) if x == "time" else [None] * len(rows)
        for key, style, name in (("valid", "-", label), ("train", "--", f"{label} (train)")):
            points = _run_points(rows, key, x, y, times)
            if points:
                xs, ys = zip(*points)
                (line,) = ax.plot(xs, ys, style, color=color, label=name, marker="o", markersize=2.5)
                line.set_gid(key)
    if y == "perplexity":
        from matplotlib.ticker import FuncFormatter

        ax.set_yscale("log")
        plain = FuncFormatter(lambda value, _: f"{value:g}")  # 60, not 6 x 10^1
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
    ax.set_xlabel(RUN_X[x])
    ax.set_ylabel(RUN_Y[y])
    _finish(fig, ax, title)
    return fig


def plot_runs(runs, path: str | os.PathLike, *, y: str = "loss", x: str = "tokens", labels=None,
              title: str | None = None) -> Path | None:
    """Several runs' curves on one PNG: validation solid, training dashed, one color per run.

    ``runs``: (label, metrics rows) pairs, or lists of rows (labelled
    "run 1", ...; ``labels`` replaces the labels either way). ``y``: "loss"
    (nats per token) or "perplexity" (the rows' validation perplexity,
    exp of the training loss; log scale). ``x``: "tokens", "time" (see
    ``elapsed_seconds``), "step" or "epoch". Rows without the value are left
    out of their curve. Returns the path, or None without matplotlib.
    """
    return _save(lambda: runs_figure(runs, y=y, x=x, labels=labels, title=title), path)


# -- diagnostics ----------------------------------------------------------------------------------


def _diagnosis_dict(result) -> dict:
    return result if isinstance(result, dict) else result.to_dict()


def gradient_lags_figure(results, *, title: str | None = None):
    """The Figure of ``plot_gradient_lags``: lines with gid "h" and "c", threshold lines with gid "threshold"."""
    fig, ax = _new_figure()
    thresholds = []
    for i, result in enumerate(results):
        data = _diagnosis_dict(result)
        top = data["num_layers"] - 1
        label = data.get("label") or f"{data['cell']} {data['num_layers']} x {data['hidden_size']}"
        for curve in data["curves"]:
            if curve["layer"] != top:
                continue
            lags = range(len(curve["ratio"]))
            ratio = [float("nan") if v is None or v <= 0 else v for v in curve["ratio"]]  # log scale: no zeros
            name = (f"{label} (memory {curve['effective_memory']})" if curve["part"] == "h"
                    else f"{label}, memory cell")
            (line,) = ax.plot(lags, ratio, "-" if curve["part"] == "h" else "--", color=f"C{i % 10}", label=name)
            line.set_gid(curve["part"])
        if data["threshold"] not in thresholds:
            thresholds.append(data["threshold"])
    for threshold in thresholds:
        line = ax.axhline(threshold, color="0.4", linestyle=":", linewidth=1, label=f"threshold {threshold:g}")
        line.set_gid("threshold")
    ax.set_yscale("log")
    ax.set_xlabel("lag k (steps back)")
    ax.set_ylabel("|d loss_t / d state_(t-k)| / |d loss_t / d h_t|")
    _finish(fig, ax, title)
    return fig


def plot_gradient_lags(results, path: str | os.PathLike, *, title: str | None = None) -> Path | None:
    """The normalised gradient ratio against the lag, log scale, one line per model (its top layer's h;
    dashed, the LSTM's memory cell c), the effective-memory threshold as a horizontal line.

    ``results``: ``diagnose.Diagnosis`` objects or their ``to_dict()``
    (labelled by their ``label``, else by cell and size). Returns the path,
    or None without matplotlib.
    """
    return _save(lambda: gradient_lags_figure(results, title=title), path)
