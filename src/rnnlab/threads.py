"""rnnlab's worker threads and the BLAS pin.

The output layer splits the vocabulary among rnnlab's own threads: each
thread makes its slice of the logits and exponentiates it, and later makes
its slice of the gradients (or the SGD step), with the BLAS held at one
thread meanwhile (threadpoolctl does that; without it, one part runs and the
BLAS keeps its own threads). ``RNNLAB_THREADS`` sets how many.
"""
from __future__ import annotations

import os
import queue
import threading
from contextlib import contextmanager

import numpy as np

_threads = max(1, min(int(os.environ.get("RNNLAB_THREADS", os.cpu_count() or 1)), 8))
_blas = "unknown"


def set_num_threads(n: int):
    """Threads for rnnlab's own parallel work (the BLAS's count is restored after it)."""
    global _threads
    _threads = max(1, int(n))
    _stop_workers()


def get_num_threads() -> int:
    return _threads


def _blas_controller():
    """threadpoolctl's handle on numpy's BLAS, or None when it cannot be had."""
    global _blas
    if _blas == "unknown":
        try:
            from threadpoolctl import ThreadpoolController

            libs = ThreadpoolController().select(user_api="blas").lib_controllers
            _blas = libs[0] if len(libs) == 1 else None
        except Exception:  # not installed, or a BLAS it does not know
            _blas = None
    return _blas


def parallel_parts() -> int:
    """How many parts rnnlab's parallel loops may split their work into."""
    return _threads if _threads > 1 and _blas_controller() is not None else 1


_pinned = threading.local()


@contextmanager
def own_threads():
    """Within: the BLAS runs single-threaded and rnnlab's threads do the parallel work.

    Wraps a whole forward/backward, not only the parallel parts: OpenBLAS's
    idle workers keep spinning for a while after each multi-threaded call and
    would compete with rnnlab's threads for the cores. Re-entrant.
    """
    depth = getattr(_pinned, "depth", 0)
    blas = _blas_controller() if depth == 0 and parallel_parts() > 1 else None  # the outermost pins
    before = blas.get_num_threads() if blas is not None else None
    if blas is not None:
        blas.set_num_threads(1)
    _pinned.depth = depth + 1
    try:
        yield
    finally:
        _pinned.depth = depth
        if blas is not None:
            blas.set_num_threads(before)


def run_parallel(tasks):
    """Run the callables ``tasks`` and return their results in order.

    Several tasks run in rnnlab's worker threads with the BLAS at one thread
    each (numpy releases the GIL in BLAS calls and ufuncs): task i goes to
    worker i (mod the number of workers), so the same vocabulary part lands
    on the same thread from one call to the next. A single task, or a call
    from inside a task, runs here. Concurrent callers take turns. The first
    exception a task raises is raised here, after every task has finished.
    """
    if len(tasks) == 1 or getattr(_in_worker, "flag", False):
        return [task() for task in tasks]
    return _dispatch(tasks, here=False)


def _dispatch(tasks, here):
    """The tasks on the workers, task i on worker i (mod their number); with ``here``, task 0 in
    the calling thread instead and task i on worker i - 1. Their results, in order.

    Working here instead of sleeping until the workers are done saves a
    worker's wake-up and the caller's (``here`` needs every task to have a
    thread of its own, as ``run_phased``'s barrier does).
    """
    call = object()  # tells this call's outcomes from the late ones of an interrupted call
    mine, theirs = (tasks[:1], tasks[1:]) if here else ([], tasks)
    with _run_lock, own_threads():
        workers = _start_workers()
        for i, task in enumerate(theirs):
            workers[i % len(workers)].inbox.put((call, task))
        outcomes = []
        was_in_worker = getattr(_in_worker, "flag", False)
        _in_worker.flag = True  # a run_parallel inside a task run here runs inline, as in a worker
        try:
            for task in mine:
                try:
                    outcomes.append((True, task()))
                except BaseException as error:  # raised below, once the workers are done
                    outcomes.append((False, error))
        finally:
            _in_worker.flag = was_in_worker
        for i in range(len(theirs)):
            outbox = workers[i % len(workers)].outbox
            while (outcome := outbox.get())[0] is not call:
                pass  # left over from a call that was interrupted (KeyboardInterrupt) while waiting
            outcomes.append(outcome[1:])
    for ok, value in outcomes:
        if not ok:
            raise value
    return [value for _, value in outcomes]


_BROKEN = object()  # a task whose partner failed (that error is the one raised)


def run_phased(first, meet, second):
    """Two phases per task with a meeting between them; returns (a, m, b).

    ``a = [f() for f in first]``, then ``m = meet(a)`` once, then
    ``b = [g(m) for g in second]``. Each task's two phases run on one
    thread: task 0 here, the others on workers. The last thread to finish
    its first phase computes ``m`` (a ``threading.Barrier`` action), so no
    thread goes back and forth through a queue in between. Where the tasks
    cannot all run at once within the thread count (one task, more tasks
    than threads, a call from inside a task) everything runs here, in order. The first
    exception raised is raised here, after every task has stopped.
    """
    n = len(first)
    if n != len(second):
        raise ValueError("run_phased needs one second phase per first phase")
    if n == 1 or n > _threads or getattr(_in_worker, "flag", False):
        done = [f() for f in first]
        met = meet(done)
        return done, met, [g(met) for g in second]
    done = [None] * n
    met = []
    barrier = threading.Barrier(n, action=lambda: met.append(meet(done)))

    def task(i):
        try:
            done[i] = first[i]()
        except BaseException:
            barrier.abort()  # the partners stop waiting
            raise
        try:
            barrier.wait()  # may raise what ``meet`` raised, in the thread that ran it
        except threading.BrokenBarrierError:
            return _BROKEN
        except BaseException:  # meet failed, or Ctrl-C in the calling thread while it waited:
            barrier.abort()  # no partner may be left waiting for it
            raise
        return second[i](met[0])

    after = _dispatch([(lambda i=i: task(i)) for i in range(n)], here=True)
    return done, met[0], after


class _Worker:
    """A thread running the (call, callable) pairs put in ``inbox``; (call, ok, result or
    exception) go to ``outbox``."""

    def __init__(self, name):
        self.inbox, self.outbox = queue.SimpleQueue(), queue.SimpleQueue()
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.thread.start()

    def _loop(self):
        _in_worker.flag = True
        while (item := self.inbox.get()) is not None:
            call, task = item
            try:
                outcome = (call, True, task())
            except BaseException as error:  # handed to the caller, which raises it
                outcome = (call, False, error)
            del item, task  # its arrays (a part's logits) must not outlive the call: see take()
            self.outbox.put(outcome)
            del outcome


_workers: list = []
_run_lock = threading.Lock()
_in_worker = threading.local()


def _start_workers() -> list:
    if not _workers:
        _workers.extend(_Worker(f"rnnlab-{k}") for k in range(_threads))
    return _workers


def _stop_workers():
    with _run_lock:
        for worker in _workers:
            worker.inbox.put(None)
        for worker in _workers:
            worker.thread.join()
        _workers.clear()


def _forget_workers():
    """In a forked child the workers' threads do not exist: start new ones when needed."""
    global _run_lock
    _workers.clear()
    _run_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_workers)


PARALLEL_WORK = 4 * 10**6  # multiply-adds from which a product is split among rnnlab's threads


def matmul_by_rows(a, b):
    """``a @ b`` for a (N, K) and b (K, M); a product of at least ``PARALLEL_WORK`` multiply-adds
    is split by rows of ``a`` among rnnlab's threads (a chunk's input projection: about twice as
    fast on 2 cores, with the BLAS still at one thread each, so nothing spins against them)."""
    n = a.shape[0]
    parts = min(parallel_parts(), n)
    if parts < 2 or n * a.shape[1] * b.shape[1] < PARALLEL_WORK:
        return a @ b
    out = np.empty((n, b.shape[1]), dtype=np.result_type(a, b))
    bounds = [n * k // parts for k in range(parts + 1)]
    run_parallel([(lambda lo=lo, hi=hi: np.matmul(a[lo:hi], b, out=out[lo:hi]))
                  for lo, hi in zip(bounds[:-1], bounds[1:])])
    return out

