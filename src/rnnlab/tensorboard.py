"""TensorBoard event logs: scalars and histograms by tag and step, written through tensorboardX.

    with EventLog("runs/shakespeare/tb") as log:
        log.scalar("loss/valid", 1.92, step=400)
        log.histogram("weights/rnn.weight_hh_l0", params["rnn.weight_hh_l0"], step=400)

``tensorboard --logdir runs`` then shows them. tensorboardX is imported
when the first ``EventLog`` is made, not with this module, so a run that
writes no event log imports nothing extra; without it, ``EventLog`` says
which extra to install (``pip install 'rnnlab[tensorboard]'``).
"""
from __future__ import annotations

import itertools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .errors import RnnlabError

INSTALL_HINT = "pip install 'rnnlab[tensorboard]'"


def _writer_library():
    """tensorboardX's event file writer, summaries and event record, imported now.

    tensorboardX imports PyTorch at import time when it is installed, only to
    accept its tensors, which are never passed here; a process that has not
    imported torch yet is kept from doing so (about a second and a few
    hundred MB, and PyTorch's own thread pools beside rnnlab's).
    """
    keep_torch_out = "torch" not in sys.modules
    if keep_torch_out:
        sys.modules["torch"] = None  # `import torch` now raises ImportError, which tensorboardX handles
    try:
        from tensorboardX import summary
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto.event_pb2 import Event
    except ImportError as e:
        raise RnnlabError(f"writing TensorBoard event logs needs tensorboardX ({e}): {INSTALL_HINT}") from None
    finally:
        if keep_torch_out and sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]
    return WriterLibrary(EventsWriter, summary.scalar, summary.histogram, Event)


class WriterLibrary(NamedTuple):
    events_writer: type  # EventsWriter(file_prefix, filename_suffix): write_event, flush, close
    scalar: Callable  # (tag, value) -> Summary
    histogram: Callable  # (tag, values, bins) -> Summary
    event: type  # Event(wall_time=, step=, summary=)


class EventLog:
    """An event log in ``logdir`` (made if missing) that TensorBoard reads; a context manager.

    Each log is one new event file, ``events.out.tfevents.<time>.<host>.<pid>.<n>``.
    Events are written as they come, to a buffer that goes to disk at
    ``flush``, at ``close`` and with the first event ``flush_secs`` seconds
    after the last flush: no thread and no queue, so an event written and
    flushed is on disk.
    """

    _opened = itertools.count()

    def __init__(self, logdir: str | os.PathLike, *, flush_secs: float = 10.0):
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self._library = _writer_library()
        suffix = f".{os.getpid()}.{next(self._opened)}"  # two logs opened in one second get two files
        self._writer = self._library.events_writer(str(self.logdir / "events"), suffix)
        self._flush_secs = flush_secs
        self._flushed_at = time.monotonic()
        self._closed = False

    def _write(self, summary, step: int, wall_time: float | None) -> None:
        if self._closed:
            raise ValueError(f"the event log in {self.logdir} is closed")
        event = self._library.event(wall_time=time.time() if wall_time is None else float(wall_time),
                                    step=int(step), summary=summary)
        self._writer.write_event(event)
        if time.monotonic() - self._flushed_at >= self._flush_secs:
            self.flush()

    def scalar(self, tag: str, value: float, step: int, wall_time: float | None = None) -> None:
        """One value of the curve ``tag`` at ``step`` (``wall_time``: seconds since the epoch, None: now)."""
        self._write(self._library.scalar(tag, float(value)), step, wall_time)

    def scalars(self, values: dict, step: int, wall_time: float | None = None) -> None:
        """``scalar`` for every tag -> value of ``values`` whose value is a number (None and others skipped)."""
        for tag, value in values.items():
            if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
                self.scalar(tag, value, step, wall_time)

    def histogram(self, tag: str, values, step: int, wall_time: float | None = None, bins="auto") -> None:
        """The distribution of ``values`` (any shape) at ``step``, in ``bins`` as ``np.histogram`` takes them.

        Non-finite values are left out (a histogram has no place for them);
        ``ValueError`` when no finite value is left.
        """
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            raise ValueError(f"histogram {tag!r} at step {step}: no finite values among {values.size}")
        self._write(self._library.histogram(tag, finite, bins), step, wall_time)

    def flush(self) -> None:
        """Write every event so far to disk now."""
        if not self._closed:
            self._writer.flush()
            self._flushed_at = time.monotonic()

    def close(self) -> None:
        """Flush and close the log; no event may follow. Closing again does nothing."""
        if not self._closed:
            self._writer.close()
            self._closed = True

    def __enter__(self) -> "EventLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
