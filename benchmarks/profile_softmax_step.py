"""Where the trainer's clipped SGD step goes, per gate, for each output layer at one vocabulary.

The model and step of ``python -m rnnlab.bench_softmax`` (embedding 200, one
layer of 200, float32, batch 20 x 35, chunk BPTT, ``clipped_sgd_step`` to
0.25 at lr 0.1, Zipf-distributed ids, the layers' default classes and
cutoffs), ``--chunks`` chunks per layer after three of warm-up: the time per
chunk, then with every gate's ``forward`` and ``backward`` wrapped in a
wall-clock timer (nested gates count in both: the class and adaptive layers'
``TwoLevelSoftmaxCE`` contains its head's ``LinearSoftmaxCE``), and the
clipping and SGD update (``row_grads.clipped_sgd_step``, the encoder's rows
summed included). What is left of the step besides the output layer and the
update is the recurrent model's own work: the bound on any output layer's
speed-up over the full softmax. Last, the class layer's matrix products
alone for one chunk's targets (its tail's three per block on one thread, as
the layer runs them, and its head's three on rnnlab's two threads): the
least its gates could take with no other work at all.

    python benchmarks/profile_softmax_step.py [--vocab 33000] [--cell lstm] [--layers full,class,adaptive]
        [--chunks 10]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # benchmark this checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))

from profile_train import wall_timers  # noqa: E402

from rnnlab import bench, model as model_module, row_grads  # noqa: E402
from rnnlab.bench_softmax import FULL, LAYERS, chunks, layer_cutoffs, zipf_stream  # noqa: E402
from rnnlab.model import LanguageModel  # noqa: E402

OUTPUT_GATES = ("LinearSoftmaxCE", "TwoLevelSoftmaxCE")


def timed_update(totals):
    """Wrap ``row_grads.clipped_sgd_step`` (as the model calls it) in a timer; returns the original."""
    original = row_grads.clipped_sgd_step

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            totals["clipping and SGD update"][0] += time.perf_counter() - start
            totals["clipping and SGD update"][1] += 1
    model_module.row_grads.clipped_sgd_step = timed
    return original


def profile_layer(layer: str, cell: str, vocab: int, count: int) -> None:
    s = FULL
    ids = zipf_stream(vocab, ((3 + count) * s.steps + 1) * s.batch)
    model = LanguageModel(vocab, s.hidden, embed_size=s.embed, cell=cell, softmax=layer,
                          cutoffs=layer_cutoffs(layer, ids), div_value=s.div_value,
                          head_bias=s.head_bias and layer == "adaptive", dtype="float32", seed=0)
    batches = chunks(ids, s, 3 + count)
    hidden = [model.init_hidden(s.batch)]

    def step(inputs, targets):
        hidden[0] = model.clipped_sgd_step(inputs, targets, s.lr, s.clip, bptt="chunk", truncate=s.steps,
                                           hidden=hidden[0]).hidden

    for batch in batches[:3]:
        step(*batch)
    start = time.perf_counter()
    for batch in batches[3:]:
        step(*batch)
    plain = (time.perf_counter() - start) / count
    with wall_timers() as totals:
        original = timed_update(totals)
        try:
            start = time.perf_counter()
            for batch in batches[3:]:
                step(*batch)
            with_timers = (time.perf_counter() - start) / count
        finally:
            model_module.row_grads.clipped_sgd_step = original
    per = {key: secs / count for key, (secs, calls) in totals.items() if calls}
    output = sum(per.get(f"{gate}.{side}", 0.0) for gate in OUTPUT_GATES[1:] for side in ("forward", "backward"))
    if layer == "full":
        output = sum(per.get(f"LinearSoftmaxCE.{side}", 0.0) for side in ("forward", "backward"))
    update = per.get("clipping and SGD update", 0.0)
    print(f"\n{cell.upper()}, {layer} softmax, V={vocab:,}: {1e3 * plain:.1f} ms/chunk "
          f"({s.batch * s.steps / plain:,.0f} tokens/s); {1e3 * with_timers:.1f} ms with the timers")
    for key, secs in sorted(per.items(), key=lambda kv: -kv[1]):
        print(f"  {1e3 * secs:8.2f} ms  {key}")
    print(f"  {1e3 * output:8.2f} ms  the output layer (its outermost gate, forward and backward)")
    print(f"  {1e3 * (with_timers - output - update):8.2f} ms  everything else: the model's own work")


def class_products_ms(vocab: int, reps: int = 50) -> tuple:
    """Median ms of the class layer's matrix products alone for one chunk of Zipf targets (700 rows,
    H = 200, the default classes): (the tail's, per block on one thread; the head's, on two)."""
    import numpy as np

    from rnnlab.class_softmax import class_cutoffs, default_classes
    from rnnlab.threads import own_threads, run_parallel
    from rnnlab.two_level import Layout, plan_blocks, route

    s = FULL
    classes = default_classes(vocab)
    ids = zipf_stream(vocab, s.batch * s.steps)
    layout = Layout((0, *class_cutoffs(ids.counts, classes), vocab), projected=False)
    gen = np.random.default_rng(0)
    weight = gen.uniform(-0.1, 0.1, (vocab, s.hidden)).astype(np.float32)
    hidden = np.tanh(gen.standard_normal((s.batch * s.steps, s.hidden))).astype(np.float32)
    routes = route(layout, ids.stream)
    rows = hidden[routes.rows]
    blocks = [(weight[b.lo:b.hi], np.ascontiguousarray(rows[b.first:b.last].T), rows[b.first:b.last])
              for b in plan_blocks(layout, routes.starts, s.hidden)]
    head = gen.uniform(-0.1, 0.1, (classes, s.hidden + 1)).astype(np.float32)
    with_ones = np.ones((len(hidden), s.hidden + 1), dtype=np.float32)
    with_ones[:, :-1] = hidden

    def tail():
        for w, x_t, x in blocks:
            logits = w @ x_t  # (words, rows)
            logits.T @ w  # the rows' gradient
            logits @ x  # the words' gradient

    def head_part(lo, hi):
        logits = with_ones @ head[lo:hi].T
        logits @ head[lo:hi, :-1]
        logits.T @ with_ones

    half = classes // 2
    parts = [lambda: head_part(0, half), lambda: head_part(half, classes)]

    with own_threads(), np.errstate(all="ignore"):
        return (1e3 * bench.median_seconds(tail, reps, warmup=1),
                1e3 * bench.median_seconds(lambda: run_parallel(parts), reps, warmup=1))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=int, default=33_000)
    parser.add_argument("--cell", default="lstm", choices=("rnn", "lstm", "gru"))
    parser.add_argument("--layers", default=",".join(LAYERS))
    parser.add_argument("--chunks", type=int, default=10)
    args = parser.parse_args(argv)
    print(bench.machine_line(bench.machine_info()))
    for layer in args.layers.split(","):
        profile_layer(layer.strip(), args.cell, args.vocab, args.chunks)
    tail, head = class_products_ms(args.vocab)
    print(f"\nthe class layer's matrix products alone, one chunk at V={args.vocab:,}: the tail's {tail:.2f} ms "
          f"(one thread), the head's {head:.2f} ms (two threads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
