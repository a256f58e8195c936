"""Ctrl-C and SIGTERM during training: finish the step, save a checkpoint, stop.

    with StopRequests() as stop:
        for batch in batches:
            step(batch)
            if stop.requested:
                save(); raise Interrupted(...)

The first SIGINT or SIGTERM only records the request and puts the default
handlers back, so a second one acts at once (Ctrl-C raises
``KeyboardInterrupt``, SIGTERM ends the process) while the checkpoint that
was last written completely stays intact (every write is atomic). Handlers
are installed only in the main thread (Python delivers signals there) and
restored on exit, so training from a notebook or another thread is untouched.
"""
from __future__ import annotations

import signal
import threading

from .errors import RnnlabError

SIGNALS = ("SIGINT", "SIGTERM")


class Interrupted(RnnlabError):
    """Training stopped on a signal after saving a checkpoint; ``exit_status`` is 128 + the signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_status = 128 + signum


class StopRequests:
    """A context in which SIGINT and SIGTERM ask the loop to stop (``requested``: the signal's
    number, or 0) instead of ending the process."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested = 0
        self._previous = {}

    def __enter__(self) -> "StopRequests":
        if self.enabled:
            for name in SIGNALS:
                number = getattr(signal, name)
                self._previous[number] = signal.signal(number, self._request)
        return self

    def _request(self, signum, frame) -> None:
        self.requested = signum
        self._restore()

    def _restore(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}

    def __exit__(self, *exc) -> None:
        self._restore()

    @property
    def name(self) -> str:
        return signal.Signals(self.requested).name if self.requested else ""
