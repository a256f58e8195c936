"""``rnnlab bench`` with its full settings (every measurement, memory included).

    python benchmarks/throughput.py [--json] [--threads N]

Same as ``rnnlab bench``; see ``src/rnnlab/bench.py`` for what is measured.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # benchmark this checkout

from rnnlab.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
