"""Where a training step's time goes: per gate, and by cProfile.

Tanh RNN, V=8000, H=100, float32, batch 64 x 20 steps, chunk BPTT with the
hidden state carried, plain SGD step: ``--chunks`` chunks after a warm-up,
run three times:

1. plain, for the time per chunk;
2. with every gate's ``forward`` and ``backward`` (and
   ``LanguageModel.sgd_step``, the fused plain SGD step that the bench's
   trainer and ``rnnlab train --optimizer sgd`` take) wrapped in a
   wall-clock timer: the time per chunk of each, whatever threads it uses
   inside (the engine hands work to worker threads, which cProfile does not
   see); the decoder's SGD step is inside ``LinearSoftmaxCE.backward``;
3. under cProfile: the functions with the most time of their own (tottime)
   and including callees (cumtime). A matrix product written ``a @ b``
   counts in the function that contains it, and work done in worker threads
   shows up only as the main thread waiting (``acquire`` of a lock).

Then the three big matrix products of one chunk timed alone (the roofline),
and the softmax's exp and row sums over one thread's half of the logits.
``--classic`` does the same for the tutorial API's float64
``classic.Model.sgd_step`` (V=8000, H=100, window 4, 20 words), and then
times its three products on one thread's half of the vocabulary alone.

    python benchmarks/profile_train.py [--chunks N] [--top K] [--classic] [--vocab V]
"""
from __future__ import annotations

import argparse
import cProfile
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import replace
import io
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # benchmark this checkout

import numpy as np  # noqa: E402

from rnnlab import bench  # noqa: E402
from rnnlab.gates import Gate  # noqa: E402
from rnnlab.model import LanguageModel  # noqa: E402


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


@contextmanager
def wall_timers():
    """Wrap each gate's forward/backward and ``LanguageModel.sgd_step`` in a timer;
    yields {name: [seconds, calls]}. Restores the classes on exit."""
    totals = defaultdict(lambda: [0.0, 0])
    targets = [(cls, name) for cls in _subclasses(Gate) for name in ("forward", "backward") if name in vars(cls)]
    targets += [(LanguageModel, "sgd_step")]
    saved = []
    for cls, name in targets:
        original = vars(cls)[name]

        def timed(*args, _original=original, _key=f"{cls.__name__}.{name}", **kwargs):
            start = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                entry = totals[_key]
                entry[0] += time.perf_counter() - start
                entry[1] += 1

        saved.append((cls, name, original))
        setattr(cls, name, timed)
    try:
        yield totals
    finally:
        for cls, name, original in saved:
            setattr(cls, name, original)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=40, help="profiled chunks")
    parser.add_argument("--top", type=int, default=15, help="functions listed per ordering")
    parser.add_argument("--classic", action="store_true", help="profile classic.Model.sgd_step instead")
    parser.add_argument("--vocab", type=int, default=bench.FULL.vocab,
                        help="vocabulary size (with --classic and 100 words: the time outside the "
                             "output layer's products)")
    args = parser.parse_args(argv)
    settings = replace(bench.FULL, vocab=args.vocab)
    machine = bench.machine_info()
    print(bench.machine_line(machine))
    if args.classic:
        model = bench._classic_model(settings)
        x, y = bench.tutorial_sentences(settings, 1, seed=5)[0]
        work = [lambda: model.sgd_step(x, y, 0.005)] * args.chunks
        what = f"classic sgd_step calls, float64, V={settings.vocab}, H={settings.hidden}, {len(x)} words"
        per = "step"
        tokens_per_call = len(x)
    else:
        trainer = bench.RnnlabTrainer(settings)
        batches = bench.stream_batches(settings, args.chunks)
        work = [lambda b=b: trainer.chunk(*b) for b in batches]
        what = f"chunks of {settings.steps}x{settings.batch}, V={settings.vocab}, H={settings.hidden}, float32"
        per = "chunk"
        tokens_per_call = settings.batch * settings.steps
    for call in work[:3]:  # warm-up
        call()
    start = time.perf_counter()
    for call in work:
        call()
    seconds = time.perf_counter() - start
    print(f"{args.chunks} {what}: {1e3 * seconds / args.chunks:.2f} ms/{per}, "
          f"{tokens_per_call * args.chunks / seconds:,.0f} tokens/s")

    with wall_timers() as totals:
        start = time.perf_counter()
        for call in work:
            call()
        timed_seconds = time.perf_counter() - start
    per_call = 1e3 / args.chunks
    print(f"\n== wall time per {per} of each gate and step ({1e3 * timed_seconds / args.chunks:.2f} ms/{per} "
          f"with the timers) ==")
    print(f"{'ms':>8} {'share':>6} {'calls':>6}  what")
    gates = 0.0
    for key, (secs, calls) in sorted(totals.items(), key=lambda kv: -kv[1][0]):
        if key != "LanguageModel.sgd_step":
            gates += secs
        print(f"{secs * per_call:8.2f} {secs / timed_seconds:6.1%} {calls // args.chunks:6}  {key}")
    in_model = totals["LanguageModel.sgd_step"][0]
    rest = timed_seconds - in_model
    print(f"{(in_model - gates) * per_call:8.2f} {(in_model - gates) / timed_seconds:6.1%} {'':6}  "
          f"sgd_step outside the gates (tape, checks, hidden state, the other parameters' steps)")
    print(f"{rest * per_call:8.2f} {rest / timed_seconds:6.1%} {'':6}  outside sgd_step")

    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    for call in work:
        call()
    profiler.disable()
    seconds = time.perf_counter() - start
    print(f"\n== cProfile: {1e3 * seconds / args.chunks:.2f} ms/{per} under the profiler ==")
    for order in ("tottime", "cumtime"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(order).print_stats(args.top)
        text = out.getvalue()
        print(f"-- by {order} --")
        print(text[text.index("   ncalls"):].rstrip())
    if not args.classic:
        roof = bench.measure_roofline(settings)
        print(f"\nthe three big products alone (roofline), per chunk: logits {roof['logits_ms']:.1f} ms, "
              f"decoder grad {roof['decoder_grad_ms']:.1f} ms, hidden grad {roof['hidden_grad_ms']:.1f} ms; "
              f"together {roof['chunk_ms']:.1f} ms = {roof['tokens_per_s']:,.0f} tokens/s")
        exp_ms, sum_ms = softmax_elementwise_ms(settings)
        print(f"the softmax's elementwise work alone on one thread's half of the logits "
              f"({settings.batch * settings.steps} x {settings.vocab // 2}, float32, one core): "
              f"exp {exp_ms:.2f} ms, row sums {sum_ms:.2f} ms")
    else:
        for blocked in (False, True):
            half = classic_half_products_ms(settings, len(x), blocked)
            how = (f"in blocks of {half.pop('rows')} rows, logits as W_b states^T (as the engine makes them)"
                   if blocked else "each in one product, logits as states W^T")
            print(("\n" if not blocked else "") + f"the three float64 products of one thread's half of the "
                  f"vocabulary alone ({len(x)} x {settings.hidden} against {settings.vocab // 2} x "
                  f"{settings.hidden}, one core), {how}: "
                  + ", ".join(f"{name} {ms:.3f} ms" for name, ms in half.items())
                  + f"; together {sum(half.values()):.3f} ms")
    return 0


def classic_half_products_ms(settings, words, blocked, reps=200):
    """Median ms of the classic step's three products on half the vocabulary, BLAS at one thread.

    ``blocked``: as ``output._exp_part_few_rows`` and ``output._weight_side``
    make them (W in blocks of ``output._few_rows_block`` rows, the logits
    as W_b states^T into (rows, words)); the dict then also holds "rows".
    Else each as one product, the logits as states W^T.
    """
    from threadpoolctl import threadpool_limits

    from rnnlab import output

    gen = np.random.default_rng(0)
    states = np.tanh(gen.standard_normal((words, settings.hidden)))
    weight = gen.uniform(-0.1, 0.1, (settings.vocab // 2, settings.hidden))
    V = len(weight)
    if blocked:
        rows = output._few_rows_block(words, settings.hidden + 1, 8)
        states_t = np.ascontiguousarray(states.T)
        exps_t = np.empty((V, words))
        blocks = [(a, min(a + rows, V)) for a in range(0, V, rows)]
        products = {"logits": lambda: [np.matmul(weight[a:b], states_t, out=exps_t[a:b]) for a, b in blocks],
                    "hidden grad": lambda: [exps_t[a:b].T @ weight[a:b] for a, b in blocks],
                    "decoder update": lambda: [exps_t[a:b] @ states for a, b in blocks]}
    else:
        exps = np.empty((words, V))
        products = {"logits": lambda: np.matmul(states, weight.T, out=exps),
                    "hidden grad": lambda: exps @ weight,
                    "decoder update": lambda: exps.T @ states}
    with threadpool_limits(1):
        times = {name: 1e3 * bench.median_seconds(fn, reps, warmup=5) for name, fn in products.items()}
    return {**times, "rows": rows} if blocked else times


def softmax_elementwise_ms(settings, reps=20):
    """Median ms of np.exp and of the row sums over (N, V / 2) float32 logits, on this thread."""
    gen = np.random.default_rng(0)
    logits = gen.uniform(-3, 3, (settings.batch * settings.steps, settings.vocab // 2)).astype(np.float32)
    exps = np.empty_like(logits)
    exp_ms = 1e3 * bench.median_seconds(lambda: np.exp(logits, out=exps), reps, warmup=2)
    sum_ms = 1e3 * bench.median_seconds(lambda: exps.sum(axis=1), reps, warmup=2)
    return exp_ms, sum_ms


if __name__ == "__main__":
    sys.exit(main())
