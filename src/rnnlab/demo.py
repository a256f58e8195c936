"""``rnnlab demo``: a character-level tanh RNN on Tiny Shakespeare in about two minutes.

Finds the corpus (``$RNNLAB_DATA_DIR``, the user cache, else a verified
download), trains a fixed budget of steps with progress and an evaluation
every 300 steps and at each epoch's end (the tutorial's halving of the rate
when the training loss rises then anneals Adam's rate), then prints text
sampled from the model. The run
goes to a temporary directory that is removed afterwards, unless ``out`` is
given (then ``rnnlab generate OUT`` samples more).

The budget is a number of steps, not of seconds, so the result is the same on
every machine; ``DEMO`` below was sized to take about two minutes on two cores
(measured: 1.4 min on a quiet 2-core machine, 2.5 min with another process
busy; validation loss about 1.60 nats/char).
"""
from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from .data.corpora import find_corpus
from .errors import RnnlabError
from .rundir import check_fresh
from .generate import generate
from .train import TrainConfig, train

DEMO = TrainConfig(format="chars", hidden=384, embed=32, layers=1, batch_size=32, bptt=64, bptt_mode="chunk",
                   optimizer="adam", lr=3e-3, clip=1.0, schedule="halve-on-rise", schedule_at="eval",
                   epochs=10, max_steps=3000, eval_every=300,
                   eval_tokens=50_000, valid_fraction=0.1, seed=0, dtype="float32")
SAMPLE_CHARS = 600
SAMPLE_TEMPERATURE = 0.8


def run_demo(out: str | None = None, *, steps: int | None = None, seed: int = 0, force: bool = False,
             quiet: bool = False, progress: bool | None = None, log=print) -> str:
    """Train the demo model and return (and print) a sample of its text."""
    say = (lambda *a: None) if quiet else log
    keep = out is not None
    if keep:  # the demo cannot continue a run: say so before the trainer suggests --resume
        try:
            check_fresh(Path(out), force)
        except RnnlabError:
            raise RnnlabError(f"{out} already holds a run; pass --force to replace it, or choose another "
                              f"--out") from None
    corpus = find_corpus("tinyshakespeare")
    directory = out if keep else tempfile.mkdtemp(prefix="rnnlab-demo-")
    cfg = replace(DEMO, corpus=str(corpus), out=str(directory), seed=seed,
                  max_steps=DEMO.max_steps if steps is None else steps)
    say(f"rnnlab demo: a character-level tanh RNN (hidden {cfg.hidden}) learns Tiny Shakespeare "
        f"for {cfg.max_steps} steps of {cfg.batch_size} x {cfg.bptt} characters")
    started = time.perf_counter()
    try:
        result = train(cfg, force=force, progress=False if quiet else progress, log=say)
        minutes = (time.perf_counter() - started) / 60
        text = generate(result.model, result.vocab, "chars", n=1, max_length=SAMPLE_CHARS,
                        temperature=SAMPLE_TEMPERATURE, seed=seed)[0]
    finally:
        if not keep:
            shutil.rmtree(directory, ignore_errors=True)
    last = result.metrics[-1]
    say(f"trained in {minutes:.1f} min: validation loss {last['valid_loss']:.3f} nats/char "
        f"(perplexity {last['perplexity']:.2f})")
    say(f"--- {SAMPLE_CHARS} characters sampled at temperature {SAMPLE_TEMPERATURE} ---")
    log(text.strip("\n"))
    if keep:
        say(f"--- the model is in {directory}; more with: rnnlab generate {directory} --prompt 'ROMEO:'")
    return text
