"""How long a run waits for its corpus: preparing a WikiText-style file once, then opening it from the cache.

Builds files of about 100 MB and 1 GB (``--sizes``, in MB) by repeating
``wikitext-2-valid.txt`` (1.1 MB, 217,646 tokens) in a temporary folder
under /tmp, then measures, each in a fresh process:

* first start: ``open_corpus`` preparing the file into an empty cache and
  loading it, with one process and with two (``workers``);
* cached start: ``open_corpus`` finding the entry (median of ``--repeats``),
  and the same with ``verify=True``, which hashes the whole file;
* sha256 of the file alone (median of ``--repeats``);
* today's path, ``prepare_corpus`` in memory, for sizes up to ``--baseline-max-mb``.

Peak RSS is ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` taken by a runner
process around each measurement: the largest process of that measurement
(worker processes included). The source file is in the page cache (it was
just written), as it is when a run starts again; the machine may be shared,
so the load average is printed beside each figure.

    python benchmarks/prepare_corpus.py [--sizes 100,1000] [--repeats 5] [--format tokens]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = str(ROOT / "src")
SEED_NAME = "wikitext-2-valid.txt"
ENV_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")

# Runs one measurement in a child and adds the child's peak RSS (KiB on Linux).
RUNNER = """
import json, resource, subprocess, sys
out = subprocess.run([sys.executable, "-c", sys.argv[1], *sys.argv[2:]], capture_output=True, text=True)
if out.returncode:
    sys.exit(out.stderr)
result = json.loads(out.stdout)
result["peak_rss_kib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps(result))
"""

WORK = """
import json, sys, time
sys.path.insert(0, {src!r})
from rnnlab.data.cache import file_sha256, open_corpus
from rnnlab.data.prepare import prepare_corpus
what, path, fmt, cache, workers = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
start = time.perf_counter()
if what == "sha256":
    file_sha256(path)
    tokens = None
elif what == "baseline":
    tokens = prepare_corpus(path, fmt).num_tokens
else:
    corpus = open_corpus(path, fmt, cache_dir=cache, workers=workers, verify=(what == "verify")).corpus
    tokens = corpus.num_tokens
print(json.dumps({{"seconds": time.perf_counter() - start, "tokens": tokens}}))
"""


def measure(what: str, path: Path, fmt: str, cache: Path, workers: int = 1) -> dict:
    """One measurement in a fresh process, with the load average before and after."""
    load_before = os.getloadavg()[0]
    run = subprocess.run([sys.executable, "-c", RUNNER, WORK.format(src=SRC), what, str(path), fmt, str(cache),
                          str(workers)], capture_output=True, text=True)
    if run.returncode:
        raise SystemExit(f"{what} failed: {run.stderr.strip()}")
    result = json.loads(run.stdout)
    result["load"] = (load_before, os.getloadavg()[0])
    return result


def median_of(repeats: int, *args, **kwargs) -> dict:
    runs = [measure(*args, **kwargs) for _ in range(repeats)]
    pick = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
    return pick | {"all_seconds": [r["seconds"] for r in runs],
                   "peak_rss_kib": max(r["peak_rss_kib"] for r in runs),
                   "load": (runs[0]["load"][0], runs[-1]["load"][1])}


def build_corpus(seed: Path, megabytes: int, folder: Path) -> Path:
    """``seed`` repeated to about ``megabytes`` MB (10**6 bytes)."""
    data = seed.read_bytes()
    copies = max(1, round(megabytes * 1e6 / len(data)))
    path = folder / f"wikitext-{megabytes}mb.txt"
    with open(path, "wb") as f:
        for _ in range(copies):
            f.write(data)
    return path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_line() -> str:
    import numpy

    env = ", ".join(f"{name}={os.environ.get(name, '(unset)')}" for name in ENV_VARS)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"machine: {cores} cores, {cpu_model()}; python {platform.python_version()}, numpy {numpy.__version__}; "
            f"{env}; load average {os.getloadavg()[0]:.2f}")


def line(label: str, result: dict, tokens: int | None = None) -> str:
    text = f"  {label:44s} {result['seconds']:8.2f} s"
    if tokens:
        text += f"  {tokens / result['seconds'] / 1e6:5.2f} M tokens/s"
    if "all_seconds" in result:
        text += f"  (runs: {', '.join(f'{s:.2f}' for s in result['all_seconds'])})"
    return (f"{text}  peak RSS {result['peak_rss_kib'] / 1024:6.0f} MiB"
            f"  load {result['load'][0]:.2f} -> {result['load'][1]:.2f}")


def find_seed() -> Path:
    for folder in (os.environ.get("RNNLAB_DATA_DIR"), ROOT.parent / "shared" / "data"):
        if folder and (Path(folder) / SEED_NAME).is_file():
            return Path(folder) / SEED_NAME
    raise SystemExit(f"{SEED_NAME} not found: set RNNLAB_DATA_DIR to the folder holding it")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000", help="corpus sizes in MB, comma-separated")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each cheap measurement (median shown)")
    parser.add_argument("--format", default="tokens", choices=("tokens", "chars", "text"))
    parser.add_argument("--baseline-max-mb", type=int, default=100,
                        help="largest size also prepared the old way, in memory (prepare_corpus)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    seed = find_seed()
    print(machine_line())
    with tempfile.TemporaryDirectory(prefix="rnnlab-prepare-bench-", dir="/tmp") as tmp:
        tmp = Path(tmp)
        for megabytes in sizes:
            path = build_corpus(seed, megabytes, tmp)
            print(f"corpus: {path.stat().st_size:,} bytes ({SEED_NAME} repeated), format {args.format}")
            if megabytes <= args.baseline_max_mb:
                result = measure("baseline", path, args.format, tmp / "unused")
                print(line("today: prepare_corpus in memory", result, result["tokens"]))
            tokens = None
            for workers in (1, 2):
                cache = tmp / f"cache-{workers}"
                result = measure("open", path, args.format, cache, workers)
                tokens = result["tokens"]
                print(line(f"first start, {workers} process{'es' if workers > 1 else ''} (prepare + load)",
                           result, tokens))
                if workers == 2:
                    print(line("cached start (open from the cache)", median_of(args.repeats, "open", path,
                                                                            args.format, cache, 2)))
                    print(line("cached start, verify=True (hash the source)",
                               median_of(args.repeats, "verify", path, args.format, cache, 2)))
                shutil.rmtree(cache)
            print(line("sha256 of the source alone", median_of(args.repeats, "sha256", path, args.format, tmp)))
            print(f"  {tokens:,} tokens; ids take {tokens * 4 / 2**20:,.0f} MiB on disk")
            path.unlink()
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
