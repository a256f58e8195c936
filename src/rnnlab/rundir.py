"""A run directory as a record of one training run.

    OUT/
      checkpoint.json, model-*.safetensors, optimizer-*.safetensors   the last state (checkpoint.py)
      best/             the same files, for the evaluation with the lowest validation loss so far
      metrics.jsonl     one JSON object per evaluation, plus event rows (a resume, the test score)
      loss.png          the curves of metrics.jsonl, learning-rate changes and resumes marked
      vocab.json        the vocabulary
      tb/               with --tensorboard: TensorBoard's event files
      diagnose.jsonl    with --diagnose-every: the gradient by lag through training

Every file here is the run's own: a fresh run refuses a directory that holds
any of them (it would replace another run's record) unless ``force`` says
so; ``--resume`` continues the one that is there. The checkpoint names its
corpus files by absolute path with their size and SHA-256, so a run resumes
from any working directory and a changed corpus is caught.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from .atomic import atomic_write
from .checkpoint import JSON_NAME
from .errors import RnnlabError

METRICS_NAME, PLOT_NAME, VOCAB_NAME, BEST_NAME = "metrics.jsonl", "loss.png", "vocab.json", "best"
TB_NAME, DIAGNOSE_NAME = "tb", "diagnose.jsonl"  # with --tensorboard, --diagnose-every (watch.py)
RUN_FILES = (JSON_NAME, METRICS_NAME, PLOT_NAME, VOCAB_NAME, BEST_NAME, TB_NAME, DIAGNOSE_NAME)
EVENT_KEY = "event"  # metrics rows that are not evaluations: {"event": "resume" | "test", ...}


def now() -> float:
    """Wall-clock time for metrics rows: seconds since the epoch."""
    return round(time.time(), 3)


# -- metrics.jsonl ------------------------------------------------------------------


def read_rows(path, max_step: int | None = None) -> list[dict]:
    """The JSON objects of a JSON-lines file (unreadable lines skipped; none if the file is
    missing), those with a ``step`` up to ``max_step``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and (max_step is None or row.get("step", 0) <= max_step):
            rows.append(row)
    return rows


def write_rows(path, rows: list[dict]) -> None:
    """A JSON-lines file of ``rows``, written atomically."""
    with atomic_write(Path(path), "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def read_metrics(out, max_step: int | None = None) -> list[dict]:
    """The rows of ``out/metrics.jsonl``, up to ``max_step``."""
    return read_rows(Path(out) / METRICS_NAME, max_step)


def write_metrics(out, metrics: list[dict]) -> None:
    write_rows(Path(out) / METRICS_NAME, metrics)


def evaluations(metrics: list[dict]) -> list[dict]:
    """The rows that are evaluations (not events)."""
    return [row for row in metrics if EVENT_KEY not in row]


# -- who owns the directory -----------------------------------------------------------


def check_fresh(out: Path, force: bool) -> None:
    """Refuse to start a run in ``out`` when it holds another run's files, unless ``force``;
    with ``force``, remove the old run's best checkpoint, event log and diagnoses (files the new
    run would add to rather than replace)."""
    if out.exists() and not out.is_dir():
        raise RnnlabError(f"{out} exists and is not a directory")
    found = [name for name in RUN_FILES if (out / name).exists()]
    if not found:
        return
    if not force:
        what = "a checkpoint" if JSON_NAME in found else f"{found[0]} from another run"
        raise RnnlabError(f"{out} already holds {what}; pass --resume to continue it, --force to replace "
                          f"it, or choose another --out")
    best = out / BEST_NAME
    if best.is_dir() and (best / JSON_NAME).exists():
        shutil.rmtree(best)
    if (out / TB_NAME).is_dir():
        shutil.rmtree(out / TB_NAME)
    (out / DIAGNOSE_NAME).unlink(missing_ok=True)


# -- the corpus files a run read -------------------------------------------------------


def check_source(saved: dict, current: dict, what: str, changed_ok: bool) -> None:
    """Refuse (unless ``changed_ok``) a corpus file whose content is not the one the checkpoint
    recorded (``saved``, ``current``: ``data.cache.SourceRecord.to_dict()``); the path may differ."""
    if not isinstance(saved, dict) or not saved.get("sha256") or saved["sha256"] == current["sha256"] or changed_ok:
        return
    moved = "" if saved.get("path") == current["path"] else f" (the checkpoint's was {saved.get('path')})"
    raise RnnlabError(f"the {what} {current['path']}{moved} is not the file the run trained on (its content "
                      f"differs); pass --corpus-changed to resume on it anyway")


def resolve_path(path: str | None) -> str | None:
    """An absolute form of a file path given on the command line (None stays None)."""
    return None if path is None else os.path.abspath(os.path.expanduser(path))
