"""threads: rnnlab's worker threads and the BLAS pin."""
import os
import signal
import threading
import time
import weakref

import numpy as np
import pytest

from rnnlab import backend, threads


def test_results_come_back_in_order_and_task_i_runs_on_worker_i(set_threads):
    set_threads(3)
    for _ in range(3):  # the same part lands on the same thread from one call to the next
        names = threads.run_parallel([lambda k=k: (k, threading.current_thread().name) for k in range(5)])
        assert [k for k, _ in names] == [0, 1, 2, 3, 4]
        assert [name for _, name in names] == ["rnnlab-0", "rnnlab-1", "rnnlab-2", "rnnlab-0", "rnnlab-1"]


def test_the_workers_keep_nothing_of_a_finished_call(set_threads):
    """A task's arrays are free once run_parallel returns, so take() can reuse them."""
    set_threads(2)
    buffers = [backend.take((4, 6), np.float32) for _ in range(2)]
    for b in buffers:
        b.fill(1.0)  # taken buffers are uninitialised
    refs = [weakref.ref(b) for b in buffers]
    results = threads.run_parallel([lambda b=b: b.sum() for b in buffers])
    del buffers, results
    again = backend.take((4, 6), np.float32)
    assert any(again is r() for r in refs)


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs signal.setitimer")
def test_a_call_interrupted_while_waiting_leaves_no_stale_results(set_threads):
    """Ctrl-C in the caller while the tasks run: the next call gets its own results, not theirs."""
    set_threads(2)

    def interrupt(*_):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(KeyboardInterrupt):
            threads.run_parallel([lambda k=k: time.sleep(0.3) or f"old {k}" for k in range(2)])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert threads.run_parallel([lambda: "new 0", lambda: "new 1"]) == ["new 0", "new 1"]
    assert threads.run_parallel([lambda: 2, lambda: 3]) == [2, 3]


def test_a_single_task_runs_in_the_calling_thread(set_threads):
    set_threads(2)
    assert threads.run_parallel([lambda: threading.current_thread().name]) == [threading.current_thread().name]


def test_the_first_exception_is_raised_after_every_task_finished(set_threads):
    set_threads(2)
    finished = []

    def failing(k):
        def task():
            if k in (1, 2):
                raise ValueError(f"task {k}")
            finished.append(k)
            return k
        return task

    with pytest.raises(ValueError, match="task 1"):
        threads.run_parallel([failing(k) for k in range(4)])
    assert sorted(finished) == [0, 3]
    assert threads.run_parallel([lambda: 7, lambda: 8]) == [7, 8]  # the workers are still in step


def test_a_call_from_inside_a_task_runs_inline(set_threads):
    set_threads(2)

    def outer(k):
        return threads.run_parallel([lambda j=j: (k, j, threading.current_thread().name) for j in range(2)])

    inner = threads.run_parallel([lambda k=k: outer(k) for k in range(2)])
    assert [[(k, j) for k, j, _ in row] for row in inner] == [[(0, 0), (0, 1)], [(1, 0), (1, 1)]]
    assert {name for row in inner for _, _, name in row} == {"rnnlab-0", "rnnlab-1"}


def test_concurrent_callers_get_their_own_results(set_threads):
    set_threads(2)
    errors, done = [], []

    def caller(c):
        try:
            for r in range(200):
                got = threads.run_parallel([lambda k=k: (c, r, k) for k in range(3)])
                assert got == [(c, r, 0), (c, r, 1), (c, r, 2)]
            done.append(c)
        except BaseException as error:  # noqa: BLE001 (reported below)
            errors.append(error)

    callers = [threading.Thread(target=caller, args=(c,)) for c in range(3)]
    for t in callers:
        t.start()
    for t in callers:
        t.join()
    assert not errors and sorted(done) == [0, 1, 2]


def phased_tasks(n, log):
    """n two-phase tasks: phase one returns 10 k; meet sums them (and logs its thread); phase two adds k."""
    first = [lambda k=k: (log.append(("first", k, threading.current_thread().name)), 10 * k)[1]
             for k in range(n)]

    def meet(done):
        log.append(("meet", tuple(done), threading.current_thread().name))
        return sum(done)

    second = [lambda total, k=k: (log.append(("second", k, threading.current_thread().name)), total + k)[1]
              for k in range(n)]
    return first, meet, second


@pytest.mark.parametrize("count,n", [(2, 2), (3, 3), (3, 2), (1, 2), (2, 3), (2, 1)])
def test_run_phased_meets_once_between_the_phases(set_threads, count, n):
    """Every first phase is done before meet, meet runs once, every second phase sees its result;
    each task's two phases run on one thread, task 0 here and task k on worker k - 1 (or all here
    when they cannot all run at once within the thread count)."""
    set_threads(count)
    log = []
    done, met, after = threads.run_phased(*phased_tasks(n, log))
    total = sum(10 * k for k in range(n))
    assert done == [10 * k for k in range(n)] and met == total
    assert after == [total + k for k in range(n)]
    kinds = [entry[0] for entry in log]
    assert kinds.count("meet") == 1
    meet_at = kinds.index("meet")
    assert sorted(kinds[:meet_at]) == ["first"] * n and kinds[meet_at + 1:] == ["second"] * n
    assert log[meet_at][1] == tuple(done)
    threads_of = {(kind, k): name for kind, k, name in log if kind != "meet"}
    here = threading.current_thread().name
    if 1 < n <= count:
        for k in range(n):
            assert threads_of[("first", k)] == threads_of[("second", k)] == (f"rnnlab-{k - 1}" if k else here)
        assert log[meet_at][2] in {here} | {f"rnnlab-{k}" for k in range(n - 1)}  # the last to arrive
    else:
        assert set(threads_of.values()) == {here}


@pytest.mark.parametrize("where", ["first", "first here", "meet", "second"])
def test_run_phased_raises_a_failure_of_any_phase_and_the_workers_stay_usable(set_threads, where):
    """A failing phase (in a worker, or in the calling thread) does not leave a partner waiting at
    the barrier: its error comes back."""
    set_threads(2)
    ran_second = []

    def first(k):
        def task():
            if (where == "first" and k == 1) or (where == "first here" and k == 0):
                time.sleep(0.05)  # the partner is already waiting at the barrier
                raise ValueError(where)
            return k
        return task

    def meet(done):
        if where == "meet":
            raise ValueError("meet")
        return done

    def second(k):
        def task(met):
            if where == "second" and k == 0:
                raise ValueError("second 0")
            ran_second.append(k)
        return task

    with pytest.raises(ValueError, match=f"{where}"):
        threads.run_phased([first(0), first(1)], meet, [second(0), second(1)])
    assert ran_second == ([1] if where == "second" else [])
    assert threads.run_parallel([lambda: 7, lambda: 8]) == [7, 8]
    assert threads.run_phased([lambda: 1, lambda: 2], sum, [lambda m: m, lambda m: -m]) == ([1, 2], 3, [3, -3])


INTERRUPTED_AT_THE_MEETING = """
import signal, time
from rnnlab import threads

threads.set_num_threads(2)

def interrupt(*_):
    raise KeyboardInterrupt

signal.signal(signal.SIGALRM, interrupt)
ran_second = []
signal.setitimer(signal.ITIMER_REAL, 0.05)
try:
    threads.run_phased([lambda: 0, lambda: time.sleep(0.3) or 1], sum,
                       [lambda m: ran_second.append(0), lambda m: ran_second.append(1)])
except KeyboardInterrupt:
    print("interrupted")
signal.setitimer(signal.ITIMER_REAL, 0)
assert ran_second == [], ran_second
assert threads.run_parallel([lambda: 7, lambda: 8]) == [7, 8]
assert threads.run_phased([lambda: 1, lambda: 2], sum, [lambda m: m, lambda m: -m]) == ([1, 2], 3, [3, -3])
print("ok")
"""


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs signal.setitimer")
def test_run_phased_interrupted_while_the_caller_waits_at_the_meeting():
    """Ctrl-C in the calling thread while it waits for a slow worker at the barrier: the
    KeyboardInterrupt comes back, the worker is not left waiting, the next calls work. In a child
    process, so that a worker left waiting fails the test (timeout) instead of hanging the run."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", INTERRUPTED_AT_THE_MEETING], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["interrupted", "ok"]


def test_run_phased_from_inside_a_task_runs_inline(set_threads):
    set_threads(2)

    def outer(k):
        return threads.run_phased([lambda: k, lambda: 2 * k], sum, [lambda m: m, lambda m: m + 1])

    assert threads.run_parallel([lambda k=k: outer(k) for k in range(2)]) == [
        ([0, 0], 0, [0, 1]), ([1, 2], 3, [3, 4])]
    with pytest.raises(ValueError, match="one second phase per first phase"):
        threads.run_phased([lambda: 0, lambda: 1], sum, [lambda m: m])


def test_set_num_threads_replaces_the_workers(set_threads):
    set_threads(2)
    threads.run_parallel([lambda: 0, lambda: 0])
    old = list(threads._workers)
    set_threads(3)
    names = threads.run_parallel([lambda: threading.current_thread().name for _ in range(3)])
    assert names == ["rnnlab-0", "rnnlab-1", "rnnlab-2"]
    assert not any(w.thread.is_alive() for w in old)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_starts_its_own_workers(set_threads):
    set_threads(2)
    threads.run_parallel([lambda: 0, lambda: 0])  # the parent's workers exist
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its parent's worker threads are gone
        try:
            ok = threads.run_parallel([lambda: 1, lambda: 2]) == [1, 2]
            os.write(write, b"ok" if ok else b"no")
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    assert os.read(read, 2) == b"ok" and status == 0
    os.close(read)


def test_own_threads_pins_the_blas_and_restores_it(set_threads):
    set_threads(2)
    if threads.parallel_parts() < 2:
        pytest.skip("threadpoolctl cannot control this BLAS")
    blas = threads._blas_controller()
    original = blas.get_num_threads()
    blas.set_num_threads(2)  # not 1, so that a pin left in place shows
    try:
        with threads.own_threads():
            assert blas.get_num_threads() == 1
            with threads.own_threads():  # re-entrant
                assert blas.get_num_threads() == 1
            assert blas.get_num_threads() == 1
        assert blas.get_num_threads() == 2
    finally:
        blas.set_num_threads(original)


def test_matmul_by_rows_splits_large_products_among_the_threads(set_threads, monkeypatch):
    """A product of PARALLEL_WORK multiply-adds or more goes to the workers by rows, with the same
    numbers as one product; a smaller one stays here."""
    set_threads(2)
    if threads.parallel_parts() < 2:
        pytest.skip("threadpoolctl cannot control this BLAS")
    calls = []
    real = threads.run_parallel
    monkeypatch.setattr(threads, "run_parallel", lambda tasks: calls.append(len(tasks)) or real(tasks))
    gen = np.random.default_rng(0)
    a, b = gen.standard_normal((301, 200)), gen.standard_normal((200, 80))  # 4.8M multiply-adds
    np.testing.assert_allclose(threads.matmul_by_rows(a, b), a @ b, rtol=1e-13)
    assert calls == [2]
    small = threads.matmul_by_rows(a[:20], b)
    np.testing.assert_allclose(small, a[:20] @ b, rtol=1e-13)
    assert calls == [2]
