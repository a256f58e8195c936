"""One classic ``sgd_step`` against the tutorial's literal step-by-step implementation.

``rnnlab.classic.Model.sgd_step`` (float64, word_dim 8000,
hidden_dim 100, bptt_truncate 4) on one 20-word sentence, against
``rnnlab.reference.ReferenceModel.sgd_step`` (one-hot vectors, one gate call
at a time, the forward pass recomputed inside BPTT) from the same weights,
the literal step in a child process with glibc's allocator untouched, as the
tutorial's script runs (``bench.literal_seconds``), and in this process too.
Prints the median time of each and their ratio (the target is >= 100x, the stretch
>= 200x), with the machine and BLAS settings they were measured under.

    python benchmarks/sgd_step.py [--reps N] [--reference-reps N] [--rounds N]
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # benchmark this checkout

from rnnlab import bench  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=bench.FULL.classic_reps,
                        help="timed classic steps, over all rounds (median)")
    parser.add_argument("--reference-reps", type=int, default=bench.FULL.reference_reps,
                        help="timed literal steps, over all rounds (median)")
    parser.add_argument("--rounds", type=int, default=bench.FULL.rounds,
                        help="rounds alternating the two sides")
    args = parser.parse_args(argv)
    settings = replace(bench.FULL, classic_reps=args.reps, reference_reps=args.reference_reps,
                       rounds=args.rounds)
    machine = bench.machine_info()
    result = bench.measure_classic(settings)
    print(bench.machine_line(machine))
    print(f"classic.Model.sgd_step, float64, word_dim {settings.vocab}, hidden_dim {settings.hidden}, "
          f"bptt_truncate 4, {result['words']} words")
    print(f"  rnnlab classic sgd_step : {result['sgd_step_ms']:9.3f} ms  (median of {args.reps}, "
          f"in {args.rounds} rounds)")
    print(f"  literal tutorial step   : {result['reference_ms']:9.3f} ms  (median of {args.reference_reps}, "
          f"in its own process with glibc's allocator as it comes, as the tutorial runs)")
    print(f"  ratio                   : {result['speedup']:9.1f}x   (target >= 100x, stretch >= 200x)")
    print(f"  literal step in-process : {result['reference_in_process_ms']:9.3f} ms  (rnnlab's allocator "
          f"settings: {result['speedup_in_process']:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
