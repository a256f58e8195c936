"""Which cell makes the best ``rnnlab demo`` in its time budget: the demo's training with another cell.

Trains ``rnnlab.demo.DEMO`` (characters of Tiny Shakespeare, embedding 32,
batch 32 x 64, Adam 3e-3, clipping 1, an evaluation every 300 steps) with the
given cell, hidden size and number of steps, and prints the wall time and the
validation loss at each evaluation, to compare with the demo's own run
(``rnnlab demo`` prints its time and final validation loss).

    python benchmarks/demo_cells.py --cell lstm --hidden 256 --steps 1750
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # benchmark this checkout

from rnnlab.bench import machine_info, machine_line  # noqa: E402
from rnnlab.data.corpora import find_corpus  # noqa: E402
from rnnlab.demo import DEMO  # noqa: E402
from rnnlab.train import train  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", default="lstm")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--steps", type=int, default=1750)
    args = parser.parse_args()
    print(machine_line(machine_info()))
    with tempfile.TemporaryDirectory() as out:
        cfg = replace(DEMO, corpus=str(find_corpus("tinyshakespeare")), out=out, cell=args.cell, hidden=args.hidden,
                      max_steps=args.steps)
        started = time.perf_counter()
        result = train(cfg, progress=False, log=lambda *a: None)
        minutes = (time.perf_counter() - started) / 60
    curve = ", ".join(f"{m['step']}: {m['valid_loss']:.3f}" for m in result.metrics)
    print(f"{args.cell} hidden {args.hidden}, {args.steps} steps in {minutes:.2f} min "
          f"(load average {os.getloadavg()[0]:.2f} after); validation loss by step: {curve}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
