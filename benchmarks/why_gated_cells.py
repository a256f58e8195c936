"""Why gated cells: a tanh RNN, an LSTM and a GRU of the same size, trained the same way on Tiny
Shakespeare, then measured with ``rnnlab diagnose``: how far back does the gradient reach?

    python benchmarks/why_gated_cells.py                       # about 3 minutes on 2 cores
    python benchmarks/why_gated_cells.py --steps 1500 --hidden 256

Each cell trains with the same recipe (characters, embedding 32, batch 32 x 64, Adam at 0.003,
clipping to 1, ``--steps`` steps), into ``--out/CELL``. The diagnosis samples the validation
part (the last 10%) and follows the gradient 60 steps back. Writes ``--plot`` (the README's
picture) and prints each cell's effective memory and validation loss. The corpus comes from
``$RNNLAB_DATA_DIR`` (or the cache, or a download), as ``rnnlab demo``'s does.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

from rnnlab import api
from rnnlab.data.corpora import find_corpus
from rnnlab.data.prepare import prepare_corpus, split_corpus
from rnnlab.diagnose import diagnose
from rnnlab.plot import plot_gradient_lags
from rnnlab.rundir import evaluations, read_metrics
from rnnlab.watch import diagnosis_sample

CELLS = ("rnn", "lstm", "gru")
MAX_LAG = 60


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/why-gated")
    parser.add_argument("--plot", default="docs/why-gated-cells.png")
    args = parser.parse_args(argv)
    corpus = find_corpus("tinyshakespeare")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, commit {commit or '?'}, load {os.getloadavg()[0]:.2f}; "
          f"{args.steps} steps of 32 x 64 characters, hidden {args.hidden}, seed {args.seed}")
    results, losses = [], {}
    for cell in CELLS:
        started = time.perf_counter()
        run = api.train(corpus, out=Path(args.out) / cell, force=True, format="chars", cell=cell,
                        hidden=args.hidden, embed=32, batch_size=32, bptt=64, optimizer="adam", lr=3e-3, clip=1.0,
                        schedule="none", epochs=100, max_steps=args.steps, seed=args.seed)
        seconds = time.perf_counter() - started
        _, valid = split_corpus(prepare_corpus(corpus, "chars", vocab=run.vocab), 0.1)
        results.append(diagnose(run.model, diagnosis_sample(valid, MAX_LAG), max_lag=MAX_LAG, label=cell))
        losses[cell] = (evaluations(read_metrics(run.directory))[-1]["valid_loss"], seconds)
    print(f"{'cell':6} {'effective memory':>17} {'ratio at lag 20':>16} {'valid loss (nats/char)':>23} "
          f"{'train s':>8}")
    for result in results:
        curve = result.curve()
        loss, seconds = losses[result.cell]
        print(f"{result.cell:6} {result.effective_memory:>17} {curve.ratio[20]:>16.2e} {loss:>23.3f} {seconds:>8.0f}")
    Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
    if plot_gradient_lags(results, args.plot, title=f"Tiny Shakespeare, hidden {args.hidden}, "
                                                    f"{args.steps} steps each") is not None:
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
