"""Peak memory of LSTM training does not grow with the number of chunks trained.

Each count of chunks runs in a fresh process: word_language_model's LSTM
(``bench_cells.FULL``: 2 layers of 200, embedding 200, V = 13,800, batch 20 x
35 steps, float32), each chunk the step ``rnnlab train --clip 0.25
--optimizer sgd`` takes (forward, chunk BPTT with the state carried,
clipping, SGD). Prints the peak RSS (VmHWM) after each count and what one
chunk's activations and the gradients take, so a reader can check the peak
is the model, its gradients and one chunk's activations, not an
accumulation.

    python benchmarks/memory_lstm.py [--chunks 5 50] [--cell lstm]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")
CHILD = """
import json, sys
sys.path.insert(0, {src!r})
from rnnlab import bench_cells
from rnnlab.bench import _peak_rss_bytes, stream_batches
s = bench_cells.FULL
trainer = bench_cells.RnnlabGated(s, sys.argv[2])
batches = stream_batches(s, 8)
for k in range(int(sys.argv[1])):
    trainer.chunk(*batches[k % len(batches)])
print(json.dumps({{"chunks": int(sys.argv[1]), "peak_rss_bytes": _peak_rss_bytes(),
                  "params_bytes": sum(p.nbytes for p in trainer.model.params.values())}}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, nargs="+", default=[5, 50])
    parser.add_argument("--cell", default="lstm", choices=("lstm", "gru"))
    args = parser.parse_args()
    sys.path.insert(0, SRC)
    from rnnlab import bench_cells
    from rnnlab.bench import machine_info, machine_line
    from rnnlab.cells import CELLS

    s = bench_cells.FULL
    print(machine_line(machine_info()))
    N, G = s.batch * s.steps, CELLS[args.cell].gates * s.hidden
    activations = 4 * (N * s.vocab + s.layers * N * (G + 4 * s.hidden))  # logits' exps; each layer's gates and states
    print(f"{args.cell}: {s.layers} x {s.hidden}, embed {s.embed}, V={s.vocab:,}, batch {s.batch} x {s.steps}, "
          f"float32; one chunk's activations about {activations / 2**20:.0f} MiB")
    for chunks in args.chunks:
        run = subprocess.run([sys.executable, "-c", CHILD.format(src=SRC), str(chunks), args.cell],
                             capture_output=True, text=True, check=True)
        result = json.loads(run.stdout)
        params = result["params_bytes"]
        print(f"  {chunks:4d} chunks: peak RSS {result['peak_rss_bytes'] / 2**20:7.1f} MiB "
              f"(parameters {params / 2**20:.0f} MiB, their gradients as much again)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
