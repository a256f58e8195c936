"""``rnnlab bench``: how fast rnnlab trains, measured side by side with its peers.

Every speed figure comes from one run, so the ratios compare like with like on
the machine at hand. The tutorial's literal step runs in child processes with
glibc's allocator as it comes, the way the tutorial's script runs (see
``literal_seconds``), and so does the memory figure:

============ =============================================================== =====================
measurement  what is timed                                                   target
============ =============================================================== =====================
train        tanh RNN, V=8000, H=100, embedding feeding the recurrence,      >= 2.5x PyTorch,
             float32, stream mode, batch 64 x 20 steps, chunk BPTT with      >= 300x tutorial
             carried hidden: loss + gradients + plain SGD step, per chunk
             (rnnlab, PyTorch in the same process, the tutorial's literal
             ``reference.ReferenceModel.sgd_step`` on 20-word sentences in
             a child process)
roofline     the three (N, H) x (H, V)-sized products of one chunk alone     rnnlab >= 70% of it
             (logits, decoder gradient, hidden gradient), float32,
             preallocated outputs: the speed limit set by the output layer
classic      one float64 ``classic.Model.sgd_step`` (V=8000, H=100,          >= 100x, and 200x as
             window 4, 20 words) vs the literal ``ReferenceModel.sgd_step``  the stretch aim
eval         ``LanguageModel.evaluate`` (forward only) on the same batches   >= 3x training
generate     ``LanguageModel.step`` at batch 1 plus sampling a token         >= 5,000 tokens/s
memory       peak RSS of training over 1M- and 10M-token int32 streams,      peak - ids the same
             a fixed number of chunks spread over the stream, in a child     at both sizes
gated        LSTM and GRU, word_language_model's sizes (``bench_cells``):     >= 1.6x PyTorch,
             forward, chunk BPTT, clip, SGD; the products alone; one layer   >= 75% of the roofline
softmax      full, class and adaptive output layers (``bench_softmax``):     class and adaptive
             tanh RNN and LSTM of 200, batch 20 x 35, V = 13.8k (the         >= 8x the full
             corpus's ids), 33k, 100k (Zipf ids): forward, chunk BPTT,       softmax's training,
             clip, SGD; evaluation; the adaptive step against PyTorch's;     >= 5x its evaluation
             the output layer alone from V = 10k to 200k                     at V = 33k, more at 100k
============ =============================================================== =====================

A speed is the median over timed chunks (or steps) after a warm-up. The
training sides, the roofline and evaluation are timed in alternating rounds
(``measure_side_by_side``), so a change in the machine's load during the run
touches both sides of each ratio. The PyTorch model computes the same
function from the same weights: its ``weight_ih_l0`` is the identity
(``nn.RNN`` always has one), and the two first-chunk losses are reported so a
reader can check they agree.

The command is a measurement: it exits 0 whether or not the targets are met
(2 on bad arguments). ``--json`` prints one JSON object with every figure.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from .classic import Model as ClassicModel
from .model import LanguageModel
from .reference import ReferenceModel

ENV_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
MIB = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """Sizes and repetitions of one bench run."""

    vocab: int = 8000
    hidden: int = 100
    batch: int = 64
    steps: int = 20  # BPTT chunk length
    lr: float = 0.1
    warmup: int = 3  # chunks (or steps) run before timing, each side, each round
    chunks: int = 20  # timed training / evaluation chunks per side per round
    rounds: int = 5  # rounds alternating the sides (see measure_side_by_side)
    tutorial_steps: int = 10  # timed ReferenceModel.sgd_step calls (20 tokens each), over all rounds
    classic_reps: int = 400  # timed classic sgd_step calls, over all rounds
    reference_reps: int = 10  # timed literal steps, over all rounds
    roofline_reps: int = 50  # over all rounds
    generate_tokens: int = 2000
    sentence_words: int = 20  # the tutorial's sentences, for the tutorial and classic figures
    memory_tokens: tuple[int, ...] = (1_000_000, 10_000_000)  # () skips the memory figure
    memory_chunks: int = 50


FULL = Settings()
QUICK = replace(FULL, warmup=2, chunks=10, rounds=3, tutorial_steps=3, classic_reps=60,
                reference_reps=3, roofline_reps=15, generate_tokens=500, memory_tokens=())
TINY = replace(FULL, vocab=300, hidden=16, batch=4, steps=5, warmup=1, chunks=3, rounds=1,
               tutorial_steps=1, classic_reps=2, reference_reps=1, roofline_reps=2,
               generate_tokens=20, sentence_words=6, memory_tokens=(10_000, 100_000), memory_chunks=2)


# -- the machine ---------------------------------------------------------------------


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _blas_info() -> dict:
    """numpy's BLAS: library, version, threads (threadpoolctl), else numpy's build config."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        threadpool_info = None
    if threadpool_info is not None:
        blas = [m for m in threadpool_info() if m.get("user_api") == "blas"]
        ours = [m for m in blas if "numpy" in m.get("filepath", "")] or blas
        if ours:
            m = ours[0]
            return {"library": m.get("internal_api"), "version": m.get("version"),
                    "threads": m.get("num_threads"), "architecture": m.get("architecture"),
                    "threading_layer": m.get("threading_layer"),
                    "file": os.path.basename(m.get("filepath", "")), "source": "threadpoolctl"}
    try:
        config = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return {"library": config.get("name"), "version": config.get("version"), "threads": None,
                "source": "numpy.show_config (threadpoolctl not importable: thread count unknown)"}
    except Exception:  # noqa: BLE001 (the config layout is numpy's, not ours)
        return {"library": None, "version": None, "threads": None, "source": "unknown"}


def machine_info() -> dict:
    """What the figures were measured on: CPU, cores, BLAS and its settings."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    return {"cpu": _cpu_model(), "nproc": affinity, "python": platform.python_version(),
            "numpy": np.__version__, "blas": _blas_info(),
            "env": {name: os.environ.get(name) for name in ENV_VARS},
            "loadavg_start": _loadavg()}


def env_text(env: dict) -> str:
    """The BLAS environment variables as NAME=value, unset ones marked."""
    return ", ".join(f"{k}={v if v is not None else '(unset)'}" for k, v in env.items())


def machine_line(machine: dict) -> str:
    """One line on what a benchmark script measured on (``machine_info``'s dict)."""
    blas = machine["blas"]
    return (f"machine: {machine['nproc']} cores, {machine['cpu']}; numpy {machine['numpy']}, "
            f"BLAS {blas['library']} {blas['version']} ({blas['threads']} threads); "
            f"{env_text(machine['env'])}; load average {machine['loadavg_start']}")


def _loadavg() -> float | None:
    """The 1-minute load average: other work on the machine skews every figure."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _import_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


# -- timing helpers ------------------------------------------------------------------


def stream_batches(s: Settings, count: int, seed: int = 1234) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` consecutive (inputs, targets) chunks (T, B) of one random-id stream, int64."""
    gen = np.random.default_rng(seed)
    rows = gen.integers(0, s.vocab, size=(count * s.steps + 1, s.batch), dtype=np.int64)
    return [(rows[i * s.steps:(i + 1) * s.steps].copy(), rows[i * s.steps + 1:(i + 1) * s.steps + 1].copy())
            for i in range(count)]


def tutorial_sentences(s: Settings, count: int, seed: int = 99) -> list[tuple[list[int], list[int]]]:
    """``count`` random sentences of ``sentence_words`` words as the tutorial's (x, y) lists."""
    gen = np.random.default_rng(seed)
    ids = gen.integers(0, s.vocab, size=(count, s.sentence_words + 1))
    return [(row[:-1].tolist(), row[1:].tolist()) for row in ids]


# -- the trainers compared ------------------------------------------------------------


class RnnlabTrainer:
    """rnnlab: one plain SGD step per chunk (``LanguageModel.sgd_step``: the loss, its gradients
    by chunk BPTT with the hidden state carried, and the update), as ``rnnlab train`` takes it
    for ``--optimizer sgd`` without clipping."""

    def __init__(self, s: Settings, seed: int = 0):
        self.model = LanguageModel(s.vocab, s.hidden, embed_size=None, bias=True, dtype="float32", seed=seed)
        self.lr = s.lr
        self.hidden = self.model.init_hidden(s.batch)
        self.steps = s.steps

    def chunk(self, inputs, targets) -> float:
        loss, self.hidden = self.model.sgd_step(inputs, targets, self.lr, bptt="chunk", truncate=self.steps,
                                                hidden=self.hidden)
        return loss


class TorchTrainer:
    """PyTorch: nn.Embedding + nn.RNN (tanh) + nn.Linear + F.cross_entropy + optim.SGD, float32.

    Starts from rnnlab's weights, with ``weight_ih_l0`` the identity and
    ``bias_ih_l0`` rnnlab's, so it computes the same function; the hidden
    state is detached between chunks, as word_language_model's
    ``repackage_hidden`` does.
    """

    def __init__(self, torch, s: Settings, params: dict):
        nn = torch.nn
        self.torch = torch
        self.vocab = s.vocab
        self.encoder = nn.Embedding(s.vocab, s.hidden)
        self.rnn = nn.RNN(s.hidden, s.hidden, nonlinearity="tanh")
        self.decoder = nn.Linear(s.hidden, s.vocab)
        with torch.no_grad():
            self.encoder.weight.copy_(torch.from_numpy(params["encoder.weight"]))
            self.rnn.weight_ih_l0.copy_(torch.eye(s.hidden))
            for name in ("weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
                getattr(self.rnn, name).copy_(torch.from_numpy(params[f"rnn.{name}"]))
            self.decoder.weight.copy_(torch.from_numpy(params["decoder.weight"]))
            self.decoder.bias.copy_(torch.from_numpy(params["decoder.bias"]))
        modules = (self.encoder, self.rnn, self.decoder)
        self.optimizer = torch.optim.SGD([p for m in modules for p in m.parameters()], lr=s.lr)
        self.hidden = torch.zeros(1, s.batch, s.hidden)

    def chunk(self, inputs, targets) -> float:
        torch = self.torch
        x, y = torch.from_numpy(inputs), torch.from_numpy(targets)
        self.optimizer.zero_grad()
        out, hidden = self.rnn(self.encoder(x), self.hidden.detach())
        self.hidden = hidden
        loss = torch.nn.functional.cross_entropy(self.decoder(out).view(-1, self.vocab), y.view(-1))
        loss.backward()
        self.optimizer.step()
        return loss.item()


def _timed(fn, reps: int, warmup: int = 0) -> list[float]:
    """Wall times of ``reps`` calls of ``fn()`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def median_seconds(fn, reps: int, warmup: int = 0) -> float:
    """Median wall time of ``fn()`` over ``reps`` calls after ``warmup`` untimed calls."""
    return statistics.median(_timed(fn, reps, warmup))


def roofline_products(s: Settings) -> dict:
    """The three big products of one chunk, float32, into preallocated outputs.

    N = batch x steps rows: logits (N, H) @ (H, V), the decoder's gradient
    (V, N) @ (N, H) and the hidden gradient (N, V) @ (V, H). The logits
    buffer doubles as the logits' gradient, as in ``output.LinearSoftmaxCE``.
    """
    N, H, V = s.batch * s.steps, s.hidden, s.vocab
    gen = np.random.default_rng(3)
    hidden = gen.standard_normal((N, H), dtype=np.float32)
    weight = gen.standard_normal((V, H), dtype=np.float32) * np.float32(0.1)
    logits = np.empty((N, V), dtype=np.float32)
    d_weight = np.empty((V, H), dtype=np.float32)
    d_hidden = np.empty((N, H), dtype=np.float32)
    return {
        "logits": lambda: np.matmul(hidden, weight.T, out=logits),
        "decoder_grad": lambda: np.matmul(logits.T, hidden, out=d_weight),
        "hidden_grad": lambda: np.matmul(logits, weight, out=d_hidden),
    }


def together(products: dict):
    """One call that runs every product of ``roofline_products`` in turn."""
    def run():
        for product in products.values():
            product()
    return run


def _per_round(total: int, s: Settings) -> int:
    """Repetitions per round for ``total`` over ``s.rounds`` rounds, rounded up."""
    return -(-total // s.rounds)


class Cycle:
    """Calls ``step(*item)`` on the items of a list in turn, round and round."""

    def __init__(self, step, items):
        self.step, self.items, self.k = step, items, 0

    def __call__(self):
        item = self.items[self.k % len(self.items)]
        self.k += 1
        return self.step(*item)


# -- the tutorial's step, in its own process -----------------------------------------------
#
# The tutorial's code runs as a script of its own, with glibc's allocator as it
# comes. Importing rnnlab retunes that allocator for the whole process
# (``backend.tune_allocator``), which happens to spare the literal step most of
# the page faults of its (V, H)-sized temporaries: about 20% of its time. So the
# literal step is timed in a child process started with RNNLAB_MALLOC_TUNE=0,
# the way the tutorial runs; the same step timed in this process is reported
# beside it ("in-process").


def _classic_model(s: Settings) -> ClassicModel:
    """``classic.Model`` from the tutorial's seed, numpy's global generator left as it was."""
    saved = np.random.get_state()
    try:
        np.random.seed(10)  # the tutorial's seed; classic.Model draws from numpy's global generator
        return ClassicModel(s.vocab, s.hidden, bptt_truncate=4)
    finally:
        np.random.set_state(saved)


def _literal_model(s: Settings, kind: str) -> ReferenceModel:
    """The literal model of a measurement: "classic" from the tutorial's seeded init, "train" seeded 7."""
    if kind == "classic":
        model = _classic_model(s)
        return ReferenceModel(model.U, model.W, model.V, bptt_truncate=4)
    gen = np.random.default_rng(7)
    U = gen.uniform(-np.sqrt(1 / s.vocab), np.sqrt(1 / s.vocab), (s.hidden, s.vocab))
    W = gen.uniform(-np.sqrt(1 / s.hidden), np.sqrt(1 / s.hidden), (s.hidden, s.hidden))
    V = gen.uniform(-np.sqrt(1 / s.hidden), np.sqrt(1 / s.hidden), (s.vocab, s.hidden))
    return ReferenceModel(U, W, V, bptt_truncate=4)


def _literal_sentences(s: Settings, kind: str):
    if kind == "classic":
        return [(*tutorial_sentences(s, 1, seed=5)[0], 0.005)]
    return [(x, y, 0.005) for x, y in tutorial_sentences(s, 4)]


def literal_child(settings: dict, kind: str, reps: int, warmup: int) -> list[float]:
    """Seconds of ``reps`` literal ``sgd_step`` calls after ``warmup``; run by ``literal_seconds``."""
    s = Settings(**{k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()})
    model = _literal_model(s, kind)
    return _timed(Cycle(model.sgd_step, _literal_sentences(s, kind)), reps, warmup)


def _run_child(code: str, args: list, env_extra: dict) -> object:
    """``python -c code *args`` with this rnnlab importable; the JSON its last line prints."""
    env = dict(os.environ, **env_extra)
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    done = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env, capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"bench child failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def literal_seconds(s: Settings, kind: str, reps: int, warmup: int) -> list[float]:
    """The literal step's times in a child process with glibc's allocator untouched, as the tutorial runs."""
    code = ("import json, sys; from rnnlab.bench import literal_child; "
            "print(json.dumps(literal_child(json.loads(sys.argv[1]), sys.argv[2], *map(int, sys.argv[3:]))))")
    return _run_child(code, [json.dumps(asdict(s)), kind, reps, warmup], {"RNNLAB_MALLOC_TUNE": "0"})


# -- the measurements ------------------------------------------------------------------


def measure_side_by_side(s: Settings, torch, progress) -> tuple[dict, dict, dict, RnnlabTrainer]:
    """Training tokens/s of rnnlab, PyTorch and the tutorial, the roofline and evaluation, in rounds.

    Each round times rnnlab's training chunks, PyTorch's, the roofline
    products, the tutorial's step and rnnlab's evaluation (``evaluate``,
    forward only, on the same batches, its own hidden state carried) one
    after the other, so a change in the machine's load during the run touches
    every side of a ratio. Returns the training, roofline and evaluation
    figures and the trained rnnlab trainer (its model serves generation).
    """
    tokens = s.steps * s.batch
    batches = stream_batches(s, s.warmup + s.chunks)
    ours = RnnlabTrainer(s)
    first = {"rnnlab": None, "torch": None}
    peer = None
    if torch is not None:
        peer = TorchTrainer(torch, s, ours.model.params)
        first["torch"] = peer.chunk(*batches[0])  # from the same weights and data ...
    first["rnnlab"] = ours.chunk(*batches[0])  # ... the same loss

    products = roofline_products(s)
    eval_hidden = [ours.model.init_hidden(s.batch)]

    def evaluator(inputs, targets):
        _, _, eval_hidden[0] = ours.model.evaluate(inputs, targets, hidden=eval_hidden[0])

    sides = {"rnnlab": (Cycle(ours.chunk, batches), s.chunks, s.warmup),
             "roofline": (together(products), max(1, s.roofline_reps // s.rounds), 1),
             "eval": (Cycle(evaluator, batches), s.chunks, s.warmup)}
    if peer is not None:
        sides["torch"] = (Cycle(peer.chunk, batches), s.chunks, s.warmup)
    times = {name: [] for name in (*sides, "tutorial")}
    for r in range(s.rounds):
        progress(f"training side by side, round {r + 1}/{s.rounds}")
        for name, (fn, reps, warmup) in sides.items():
            times[name] += _timed(fn, reps, warmup=warmup)
        times["tutorial"] += literal_seconds(s, "train", _per_round(s.tutorial_steps, s), 1)
    median = {name: statistics.median(t) for name, t in times.items()}

    train = {
        "tokens_per_chunk": tokens,
        "rnnlab_chunk_ms": 1e3 * median["rnnlab"],
        "rnnlab_tokens_per_s": tokens / median["rnnlab"],
        "torch_chunk_ms": None, "torch_tokens_per_s": None, "vs_torch": None,
        "tutorial_step_ms": 1e3 * median["tutorial"],
        "tutorial_tokens_per_s": s.sentence_words / median["tutorial"],
        "first_chunk_loss": first,
    }
    train["vs_tutorial"] = train["rnnlab_tokens_per_s"] / train["tutorial_tokens_per_s"]
    if peer is not None:
        train["torch_chunk_ms"] = 1e3 * median["torch"]
        train["torch_tokens_per_s"] = tokens / median["torch"]
        train["vs_torch"] = train["rnnlab_tokens_per_s"] / train["torch_tokens_per_s"]

    roofline = {"rows": tokens, "chunk_ms": 1e3 * median["roofline"], "tokens_per_s": tokens / median["roofline"],
                "fraction": train["rnnlab_tokens_per_s"] * median["roofline"] / tokens,
                **_each_product_ms(products, max(1, s.roofline_reps // s.rounds))}
    evaluation = {"chunk_ms": 1e3 * median["eval"], "tokens_per_s": tokens / median["eval"],
                  "vs_training": median["rnnlab"] / median["eval"]}
    return train, roofline, evaluation, ours


def _each_product_ms(products: dict, reps: int) -> dict:
    return {f"{name}_ms": 1e3 * median_seconds(product, reps, warmup=1) for name, product in products.items()}


def measure_roofline(s: Settings) -> dict:
    """The roofline products alone: all three per chunk, and each."""
    products = roofline_products(s)
    seconds = median_seconds(together(products), s.roofline_reps, warmup=1)
    return {"rows": s.batch * s.steps, "chunk_ms": 1e3 * seconds, "tokens_per_s": s.batch * s.steps / seconds,
            **_each_product_ms(products, s.roofline_reps)}


def measure_classic(s: Settings) -> dict:
    """One float64 classic ``sgd_step`` (window 4) vs the literal tutorial step, same weights and sentence.

    In ``s.rounds`` rounds, rnnlab's step is timed in this process and then
    the literal step in its own process, as the tutorial runs
    (``literal_seconds``), so that both sides see the machine's changing
    load; last, the literal step once more in this process ("in-process").
    """
    model, reference = _classic_model(s), _literal_model(s, "classic")  # the child's model, here
    x, y, lr = _literal_sentences(s, "classic")[0]
    ours, literal = [], []
    for _ in range(s.rounds):
        ours += _timed(lambda: model.sgd_step(x, y, lr), _per_round(s.classic_reps, s), warmup=2)
        literal += literal_seconds(s, "classic", _per_round(s.reference_reps, s), 1)
    in_process = median_seconds(lambda: reference.sgd_step(x, y, lr), _per_round(s.reference_reps, s), warmup=1)
    ours, literal = statistics.median(ours), statistics.median(literal)
    return {"words": s.sentence_words, "sgd_step_ms": 1e3 * ours, "reference_ms": 1e3 * literal,
            "speedup": literal / ours, "reference_in_process_ms": 1e3 * in_process,
            "speedup_in_process": in_process / ours}


def sample_token(logp: np.ndarray, gen: np.random.Generator) -> int:
    """Draw one id from log-probabilities (V,) by inverse CDF over exp(logp)."""
    cdf = np.cumsum(np.exp(logp, dtype=np.float64))
    return min(int(np.searchsorted(cdf, gen.random() * cdf[-1], side="right")), len(cdf) - 1)


def measure_generation(s: Settings, model: LanguageModel) -> dict:
    """Tokens/s of ``step`` at batch 1 followed by sampling the next token from it."""
    gen = np.random.default_rng(0)
    state = {"token": np.zeros(1, dtype=np.int64), "hidden": model.init_hidden(1)}

    def run(n):
        for _ in range(n):
            logp, state["hidden"] = model.step(state["token"], state["hidden"])
            state["token"][0] = sample_token(logp[0], gen)

    run(max(1, s.generate_tokens // 10))
    start = time.perf_counter()
    run(s.generate_tokens)
    seconds = time.perf_counter() - start
    return {"tokens": s.generate_tokens, "tokens_per_s": s.generate_tokens / seconds,
            "ms_per_token": 1e3 * seconds / s.generate_tokens}


# -- memory, in a child process ----------------------------------------------------------


def _proc_status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _peak_rss_bytes() -> int:
    kib = _proc_status_kib("VmHWM")
    if kib is None:
        import resource

        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib * 1024


def memory_child(tokens: int, chunks: int, vocab: int, hidden: int, batch: int, steps: int) -> dict:
    """Train ``chunks`` chunks spread over a ``tokens``-long int32 stream; report memory.

    Runs in a fresh process (``_memory_run``). The stream is batchified as a
    view (B columns), each chunk copied out as the trainer would; nothing
    else depends on the stream's length, which the two sizes measured show.
    """
    s = replace(FULL, vocab=vocab, hidden=hidden, batch=batch, steps=steps)
    trainer = RnnlabTrainer(s)
    rss_setup = _proc_status_kib("VmRSS")
    ids = np.random.default_rng(0).integers(0, vocab, size=tokens, dtype=np.int32)
    from .data.batching import batchify

    stream = batchify(ids, batch)  # (tokens // B, B), a view of ids
    starts = np.linspace(0, stream.shape[0] - steps - 1, chunks).astype(np.int64)
    for start in starts:
        inputs = np.ascontiguousarray(stream[start:start + steps])
        targets = np.ascontiguousarray(stream[start + 1:start + steps + 1])
        trainer.chunk(inputs, targets)
    peak = _peak_rss_bytes()
    return {"tokens": tokens, "chunks": chunks, "ids_bytes": int(ids.nbytes),
            "rss_after_setup_bytes": None if rss_setup is None else rss_setup * 1024,
            "peak_rss_bytes": peak, "peak_minus_ids_bytes": peak - int(ids.nbytes)}


def _memory_run(s: Settings, tokens: int, threads: int | None) -> dict:
    code = ("import json, sys; from rnnlab.bench import memory_child; "
            "print(json.dumps(memory_child(*map(int, sys.argv[1:]))))")
    args = [tokens, s.memory_chunks, s.vocab, s.hidden, s.batch, s.steps]
    return _run_child(code, args, {} if threads is None else {"OPENBLAS_NUM_THREADS": str(threads)})


def measure_memory(s: Settings, threads: int | None, progress) -> dict | None:
    if not s.memory_tokens:
        return None
    runs = []
    for tokens in s.memory_tokens:
        progress(f"memory, training over a {tokens:,}-token stream in a child process")
        runs.append(_memory_run(s, tokens, threads))
    small, large = runs[0], runs[-1]
    growth = large["peak_minus_ids_bytes"] - small["peak_minus_ids_bytes"]
    return {"runs": runs, "peak_rss_bytes": large["peak_rss_bytes"],
            "peak_minus_ids_bytes": large["peak_minus_ids_bytes"], "ids_bytes": large["ids_bytes"],
            "growth_beyond_ids_bytes": growth,
            "what": (f"peak RSS (VmHWM) of a child process that imports rnnlab, builds the model, "
                     f"draws an int32 id stream of N tokens, batchifies it (a view) and trains "
                     f"{s.memory_chunks} chunks of {s.steps}x{s.batch} spread over the whole stream; "
                     f"N = {', '.join(f'{n:,}' for n in s.memory_tokens)}")}


# -- targets and report ------------------------------------------------------------------

BUSY_LOAD = 0.5  # a 1-minute load average above this before the bench starts: shared cores
MEMORY_SLACK = 8 * MIB  # what "the same at both sizes" allows: allocator noise, not the corpus


def targets(results: dict) -> list[dict]:
    """Each target with its measured value and whether it is met (None: not measured)."""
    train, rows = results["train"], []

    def add(name, value, op, bound, unit):
        ok = None if value is None else (value >= bound if op == ">=" else value <= bound)
        rows.append({"name": name, "value": value, "target": f"{op} {bound:g}{unit}", "pass": ok})

    add("training vs PyTorch", train["vs_torch"], ">=", 2.5, "x")
    add("training vs tutorial", train["vs_tutorial"], ">=", 300, "x")
    add("training / roofline", results["roofline"]["fraction"], ">=", 0.70, "")
    add("classic sgd_step vs literal", results["classic"]["speedup"], ">=", 100, "x")
    add("classic sgd_step vs literal, stretch", results["classic"]["speedup"], ">=", 200, "x")
    add("evaluation / training", results["eval"]["vs_training"], ">=", 3, "x")
    add("generation tokens/s (batch 1)", results["generate"]["tokens_per_s"], ">=", 5000, "")
    memory = results["memory"]
    add("memory beyond ids, growth 1M->10M (MiB)",
        None if memory is None else memory["growth_beyond_ids_bytes"] / MIB, "<=", MEMORY_SLACK / MIB, "")
    for cell, figures in (results.get("gated") or {}).items():
        add(f"{cell.upper()} training vs PyTorch", figures["vs_torch"], ">=", 1.6, "x")
        add(f"{cell.upper()} training / roofline", figures["roofline_fraction"], ">=", 0.75, "")
    if "settings_softmax" in results:
        from . import bench_softmax

        rows += bench_softmax.targets(results.get("softmax"), results["settings_softmax"])
    return rows


def _fmt(value, unit="") -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}{unit}"
    return f"{value:.3g}{unit}"


def render(results: dict) -> str:
    m, s, train = results["machine"], results["settings"], results["train"]
    blas = m["blas"]
    torch_info = results["torch"]
    torch_text = ("not importable: its figures are skipped" if torch_info is None
                  else f"{torch_info['version']}, {torch_info['threads']} threads")
    lines = [
        f"rnnlab bench ({results['mode']}): {m['nproc']} cores, {m['cpu']}",
        f"  numpy {m['numpy']}, BLAS {blas['library']} {blas['version']} "
        f"({blas.get('architecture') or '?'} kernels, {blas['threads']} threads, via {blas['source']})",
        f"  {env_text(m['env'])}",
        f"  load average (1 min) before / after the speed figures: {m['loadavg_start']} / "
        f"{m['loadavg_end']} (after includes the bench's own threads)",
        f"  PyTorch: {torch_text}",
        f"  model: tanh RNN, V={s['vocab']}, H={s['hidden']}, float32, batch {s['batch']} x {s['steps']} steps "
        f"({train['tokens_per_chunk']} tokens/chunk), chunk BPTT, SGD lr {s['lr']:g}; "
        f"medians over {s['chunks'] * s['rounds']} chunks",
        "",
        f"{'measurement':44} {'value':>16}",
        f"{'training, rnnlab':44} {_fmt(train['rnnlab_tokens_per_s'])} tokens/s ({train['rnnlab_chunk_ms']:.1f} ms/chunk)",
        f"{'training, PyTorch':44} {_fmt(train['torch_tokens_per_s'])} tokens/s"
        + (f" ({train['torch_chunk_ms']:.1f} ms/chunk)" if train["torch_chunk_ms"] else ""),
        f"{'training, tutorial literal sgd_step':44} {_fmt(train['tutorial_tokens_per_s'])} tokens/s "
        f"({train['tutorial_step_ms']:.0f} ms per {s['sentence_words']}-word sentence, own process)",
        f"{'first-chunk loss, rnnlab / PyTorch':44} {_fmt(train['first_chunk_loss']['rnnlab'])} / "
        f"{_fmt(train['first_chunk_loss']['torch'])}",
    ]
    roof = results["roofline"]
    lines.append(f"{'roofline: 3 big products alone':44} {_fmt(roof['tokens_per_s'])} tokens/s "
                 f"({roof['chunk_ms']:.1f} ms: logits {roof['logits_ms']:.1f}, decoder grad "
                 f"{roof['decoder_grad_ms']:.1f}, hidden grad {roof['hidden_grad_ms']:.1f})")
    classic = results["classic"]
    lines.append(f"{'classic sgd_step (float64) / literal':44} {classic['sgd_step_ms']:.2f} ms / "
                 f"{classic['reference_ms']:.0f} ms ({classic['reference_in_process_ms']:.0f} ms in-process: "
                 f"{classic['speedup_in_process']:.0f}x)")
    ev = results["eval"]
    lines.append(f"{'evaluation (forward only)':44} {_fmt(ev['tokens_per_s'])} tokens/s ({ev['chunk_ms']:.1f} ms/chunk)")
    lines.append(f"{'generation, batch 1, sampling':44} {_fmt(results['generate']['tokens_per_s'])} tokens/s")
    memory = results["memory"]
    if memory is None:
        lines.append(f"{'memory':44} not measured (--quick)")
    else:
        for run in memory["runs"]:
            lines.append(f"{'memory, ' + format(run['tokens'], ',') + '-token stream':44} "
                         f"peak RSS {run['peak_rss_bytes'] / MIB:.1f} MiB, ids {run['ids_bytes'] / MIB:.1f} MiB, "
                         f"peak - ids {run['peak_minus_ids_bytes'] / MIB:.1f} MiB")
        lines.append(f"  ({memory['what']})")
    for cell, g in (results.get("gated") or {}).items():
        gs = results["settings_gated"]
        lines.append(f"{cell.upper() + ' (' + str(gs['layers']) + ' x ' + str(gs['hidden']) + ', V=' + format(gs['vocab'], ',') + '), rnnlab / PyTorch':44} "
                     f"{_fmt(g['rnnlab_tokens_per_s'])} / {_fmt(g['torch_tokens_per_s'])} tokens/s "
                     f"(first-chunk loss {_fmt(g['first_chunk_loss']['rnnlab'])} / {_fmt(g['first_chunk_loss']['torch'])})")
        lines.append(f"{'  roofline: every product of the step alone':44} {_fmt(g['roofline_tokens_per_s'])} tokens/s "
                     f"({g['roofline_chunk_ms']:.1f} ms/chunk)")
        torch_layer = "" if g["torch_layer_ms"] is None else f" / {g['torch_layer_ms']:.1f} ms"
        lines.append(f"{'  one layer forward + backward, rnnlab / PyTorch':44} {g['rnnlab_layer_ms']:.1f} ms{torch_layer}")
    if results.get("softmax") is not None:
        from . import bench_softmax

        lines += bench_softmax.render(results["softmax"], results["settings_softmax"])
    if m["loadavg_start"] is not None and m["loadavg_start"] > BUSY_LOAD:
        lines.append(f"WARNING: the machine was busy before the bench started (load average "
                     f"{m['loadavg_start']} on {m['nproc']} cores): other processes share the cores, and "
                     f"the speed figures may understate it")
    lines += ["", f"{'target':44} {'measured':>10} {'target':>10}  result"]
    for row in results["targets"]:
        value = row["value"]
        shown = "-" if value is None else (f"{value:.0%}" if "roofline" in row["name"] else _fmt(value))
        verdict = "n/a" if row["pass"] is None else ("PASS" if row["pass"] else "FAIL")
        target = row["target"]
        if "roofline" in row["name"]:
            target = f"{target.split()[0]} {float(target.split()[1]):.0%}"
        lines.append(f"{row['name']:44} {shown:>10} {target:>10}  {verdict}")
    return "\n".join(lines)


# -- command line ------------------------------------------------------------------------


class _ArgumentError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise _ArgumentError(message)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rnnlab bench",
        description="Measure training, evaluation and generation speed side by side with PyTorch "
                    "(when importable) and the tutorial's literal implementation, the roofline of "
                    "the output layer and the peak memory; print each target with PASS/FAIL. "
                    "Exits 0 whatever the figures.")
    parser.add_argument("--json", action="store_true", help="print one JSON object with every figure")
    parser.add_argument("--quick", action="store_true",
                        help="fewer repetitions and no memory measurement (about 45 seconds)")
    parser.add_argument("--threads", type=_positive_int, metavar="N",
                        help="BLAS and PyTorch threads (default: BLAS's current setting)")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # tests: tiny sizes
    parser.add_argument("--no-torch", action="store_true", help=argparse.SUPPRESS)  # tests: skip PyTorch
    return parser


def run(settings: Settings, mode: str, *, threads: int | None = None, use_torch: bool = True,
        progress=lambda message: None, gated_settings=None, softmax_settings=None) -> dict:
    """Every measurement; returns the JSON-able result (see ``--json``)."""
    from . import bench_cells, bench_softmax

    gated_settings = gated_settings or {"full": bench_cells.FULL, "quick": bench_cells.QUICK}.get(mode, bench_cells.TINY)
    softmax_settings = softmax_settings or {"full": bench_softmax.FULL,
                                            "quick": bench_softmax.QUICK}.get(mode, bench_softmax.TINY)
    limits = nullcontext()
    threads_applied = threads is None
    if threads is not None:
        try:
            from threadpoolctl import threadpool_limits

            limits = threadpool_limits(limits=threads)
            threads_applied = True
        except ImportError:
            progress("threadpoolctl is not importable: --threads applies to PyTorch only")
    torch = _import_torch() if use_torch else None
    with limits:
        machine = machine_info()
        machine["threads_requested"] = threads
        machine["threads_applied_to_blas"] = threads_applied
        torch_info = None
        if torch is not None:
            torch.set_num_threads(threads or machine["blas"]["threads"] or os.cpu_count())
            torch.manual_seed(0)
            torch_info = {"version": torch.__version__, "threads": torch.get_num_threads(),
                          "mkl": bool(torch.backends.mkl.is_available())}
        train, roofline, evaluation, trainer = measure_side_by_side(settings, torch, progress)
        progress("classic sgd_step vs the literal tutorial step")
        classic = measure_classic(settings)
        progress("generation")
        generation = measure_generation(settings, trainer.model)
        gated = bench_cells.measure(gated_settings, torch, progress)
        softmax = bench_softmax.measure(softmax_settings, torch, progress)
    machine["loadavg_end"] = _loadavg()
    memory = measure_memory(settings, threads, progress)
    results = {"mode": mode, "machine": machine, "torch": torch_info, "settings": asdict(settings),
               "train": train, "roofline": roofline, "classic": classic, "eval": evaluation,
               "generate": generation, "memory": memory, "settings_gated": asdict(gated_settings), "gated": gated,
               "settings_softmax": asdict(softmax_settings), "softmax": softmax}
    results["targets"] = targets(results)
    return results


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _ArgumentError as e:
        print(f"rnnlab bench: error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:  # --help
        return int(e.code or 0)
    if args.tiny:
        settings, mode = TINY, "tiny"
    elif args.quick:
        settings, mode = QUICK, "quick"
    else:
        settings, mode = FULL, "full"

    def progress(message):
        print(f"[bench] {message} ...", file=sys.stderr, flush=True)

    results = run(settings, mode, threads=args.threads, use_torch=not args.no_torch, progress=progress)
    print(json.dumps(results, indent=2) if args.json else render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
