"""What the cut output layers cost in perplexity: full, class and adaptive softmax trained the same way.

The same model and recipe with each output layer, through ``rnnlab.train.train``
(``format="tokens"``): an LSTM of one layer, hidden 200, embedding 200,
dropout 0.2, batch 20 x 35, chunk BPTT, SGD, clipping to 0.25,
word_language_model's plateau schedule, ``--epochs`` epochs, on
wikitext-2-valid (every token, ids by frequency) with the last 10% held out
(``valid_fraction=0.1``). Each layer takes the trainer's own defaults for
it (``train.SOFTMAX_DEFAULTS``): SGD at lr 20, the adaptive layer at 10
(``--lr`` sets one rate for all); the class layer
``class_softmax.default_classes(V)`` classes (about 3 sqrt(V)) cut from the
training part's counts; the adaptive layer the cutoffs of
``rnnlab.bench_softmax.adaptive_cutoffs(V)`` (``--cutoffs`` overrides them),
div_value 4 (``--div-value``), a head bias (``--no-head-bias``).

For each seed the three layers train one after the other, so that a change in
the machine's load touches all three; each reports the held-out perplexity
after the last epoch and the best over the epochs, and its training time
(the training steps only: tokens / tokens/s over the epochs, the evaluations
excluded). The table gives the mean over seeds and each cut layer's ratio to
the full softmax's perplexity (the aim: within 5%).

    python benchmarks/softmax_quality.py [--epochs 3] [--seeds 3] [--layers full,class,adaptive]
        [--cutoffs 2000,10000] [--div-value 4] [--[no-]head-bias] [--classes C] [--lr X] [--out DIR]

The corpus comes from ``$RNNLAB_DATA_DIR`` (default ``../shared/data`` beside
the repository). Runs go to ``--out`` (a temporary folder by default), one
folder per layer and seed.
"""
from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # benchmark this checkout

from rnnlab.bench import machine_info, machine_line  # noqa: E402
from rnnlab.bench_softmax import adaptive_cutoffs  # noqa: E402
from rnnlab.data import prepare_corpus  # noqa: E402
from rnnlab.train import TrainConfig, train  # noqa: E402

CORPUS = "wikitext-2-valid.txt"
LAYERS = ("full", "class", "adaptive")
GOAL = 0.05  # a cut layer's perplexity within 5% of the full softmax's


def data_dir() -> Path:
    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    return Path(os.environ.get("RNNLAB_DATA_DIR") or default)


def commit() -> str:
    """The checkout's short commit, marked when the tree has changes of its own."""
    root = Path(__file__).resolve().parents[1]
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                           capture_output=True, text=True)
    name = head.stdout.strip() or "?"
    return name + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..K-1, each training every layer")
    parser.add_argument("--layers", default=",".join(LAYERS), help="comma-separated: full, class, adaptive")
    parser.add_argument("--cutoffs", default=None, help="the adaptive layer's cutoffs, e.g. 2000,10000")
    parser.add_argument("--div-value", type=float, default=4.0, help="the adaptive layer's div_value")
    parser.add_argument("--head-bias", action=argparse.BooleanOptionalAction, default=None,
                        help="the adaptive layer's head has a bias (default: the trainer's, on)")
    parser.add_argument("--classes", type=int, default=0, help="the class layer's classes (0: about 3 sqrt(V))")
    parser.add_argument("--hidden", type=int, default=200)
    parser.add_argument("--embed", type=int, default=200)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--lr", type=float, default=None,
                        help="SGD's rate for every layer (default: the trainer's for each: 20, the adaptive layer 10)")
    parser.add_argument("--clip", type=float, default=0.25)
    parser.add_argument("--out", default=None, help="where the runs go (default: a temporary folder)")
    args = parser.parse_args(argv)
    args.layers = tuple(name.strip() for name in args.layers.split(",") if name.strip())
    unknown = [name for name in args.layers if name not in LAYERS]
    if unknown or not args.layers:
        parser.error(f"--layers takes {', '.join(LAYERS)}, not {args.layers}")
    if args.cutoffs is not None:
        args.cutoffs = tuple(int(c) for c in args.cutoffs.split(","))
    if args.epochs < 1 or args.seeds < 1:
        parser.error("--epochs and --seeds must be at least 1")
    return args


def layer_config(args, corpus: Path, layer: str, cutoffs: tuple, **kw) -> TrainConfig:
    """The run of one layer: the benchmark's model and recipe, the trainer's defaults for the rest."""
    cut = {"class": dict(classes=args.classes), "adaptive": dict(cutoffs=cutoffs, div_value=args.div_value,
                                                                       head_bias=args.head_bias)}.get(layer, {})
    return TrainConfig(corpus=str(corpus), format="tokens", softmax=layer, cell="lstm", layers=1, hidden=args.hidden,
                       embed=args.embed, dropout=args.dropout, lr=args.lr, clip=args.clip, schedule="plateau",
                       epochs=args.epochs, valid_fraction=0.1, **cut, **kw)


def train_one(args, corpus: Path, out: Path, layer: str, seed: int, cutoffs: tuple) -> dict:
    """One run: perplexity after the last epoch, the best, and the training seconds."""
    config = layer_config(args, corpus, layer, cutoffs, out=str(out), seed=seed)
    started = time.perf_counter()
    result = train(config, force=True, progress=False, log=lambda *a, **k: None)
    wall = time.perf_counter() - started
    epochs = [row for row in result.metrics if row.get("valid_loss") is not None and row.get("step")]
    training = sum(row["tokens"] - previous["tokens"] for previous, row in zip([{"tokens": 0}] + epochs, epochs))
    seconds = sum((row["tokens"] - previous["tokens"]) / row["tokens_per_s"]
                  for previous, row in zip([{"tokens": 0}] + epochs, epochs) if row.get("tokens_per_s"))
    return {"perplexity": epochs[-1]["perplexity"], "best": min(row["perplexity"] for row in epochs),
            "train_seconds": seconds, "tokens_per_s": training / seconds if seconds else None, "wall_seconds": wall,
            "lr": epochs[-1]["lr"]}


def main(argv=None) -> None:
    args = parse_args(argv)
    corpus = data_dir() / CORPUS
    if not corpus.is_file():
        sys.exit(f"softmax_quality.py: no {CORPUS} in {corpus.parent}; set RNNLAB_DATA_DIR to the folder that holds it")
    vocab_size = len(prepare_corpus(corpus, "tokens").vocab)
    cutoffs = args.cutoffs or adaptive_cutoffs(vocab_size)
    command = " ".join(shlex.quote(a) for a in ["python", "benchmarks/softmax_quality.py", *(argv or sys.argv[1:])])
    print(f"$ {command}")
    print(f"{datetime.now(timezone.utc):%Y-%m-%dT%H:%M:%SZ}, commit {commit()}")
    print(machine_line(machine_info()))
    resolved = {layer: layer_config(args, corpus, layer, cutoffs).resolved() for layer in args.layers}
    rates = ", ".join(f"{layer} {cfg.lr:g}" for layer, cfg in resolved.items())
    head_bias = resolved["adaptive"].head_bias if "adaptive" in resolved else False
    print(f"{CORPUS}: V={vocab_size:,}, the last 10% held out; LSTM 1 x {args.hidden}, embedding {args.embed}, "
          f"dropout {args.dropout:g}, batch 20 x 35, SGD lr ({rates}), clip {args.clip:g}, plateau, "
          f"{args.epochs} epochs; class: {args.classes or 'about 3 sqrt(V)'} classes; adaptive: cutoffs "
          f"{','.join(map(str, cutoffs))}, div_value {args.div_value:g}{', head bias' if head_bias else ''}; "
          f"seeds 0..{args.seeds - 1}", flush=True)
    started = time.perf_counter()
    runs = {layer: [] for layer in args.layers}
    with tempfile.TemporaryDirectory(prefix="softmax-quality-") as scratch:
        root = Path(args.out or scratch)
        for seed in range(args.seeds):
            for layer in args.layers:
                run = train_one(args, corpus, root / f"{layer}-seed{seed}", layer, seed, cutoffs)
                runs[layer].append(run)
                print(f"  seed {seed} {layer:9} perplexity {run['perplexity']:8.2f} (best {run['best']:.2f}), "
                      f"training {run['train_seconds']:6.0f} s ({run['tokens_per_s']:,.0f} tokens/s), "
                      f"run {run['wall_seconds']:.0f} s, load {os.getloadavg()[0]:.2f}", flush=True)
    print(f"\n{'layer':9} {'perplexity':>11} {'vs full':>8} {'best':>8} {'vs full':>8} {'training s':>11} "
          f"{'tokens/s':>9} {'x full':>7}  (means over {args.seeds} seeds)")
    mean = {layer: {key: statistics.mean(run[key] for run in runs[layer])
                    for key in ("perplexity", "best", "train_seconds", "tokens_per_s")} for layer in args.layers}
    full = mean.get("full")
    for layer in args.layers:
        m = mean[layer]
        ratio = best_ratio = speed = "-"
        if full:
            ratio = f"{m['perplexity'] / full['perplexity']:.3f}"
            best_ratio = f"{m['best'] / full['best']:.3f}"
            speed = f"{m['tokens_per_s'] / full['tokens_per_s']:.1f}"
        print(f"{layer:9} {m['perplexity']:>11.2f} {ratio:>8} {m['best']:>8.2f} {best_ratio:>8} "
              f"{m['train_seconds']:>11.0f} {m['tokens_per_s']:>9,.0f} {speed:>7}")
    if full:
        for layer in args.layers:
            if layer != "full":
                ratio = mean[layer]["perplexity"] / full["perplexity"]
                verdict = "within" if ratio <= 1 + GOAL else "NOT within"
                print(f"{layer} softmax: perplexity {ratio - 1:+.1%} against the full softmax's, {verdict} "
                      f"{GOAL:.0%}")
    print(f"wall time {time.perf_counter() - started:.0f} s; load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
