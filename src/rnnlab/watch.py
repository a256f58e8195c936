"""What a training run reports besides metrics.jsonl, when asked.

* ``--tensorboard``: an event log in ``OUT/tb`` (``tensorboard --logdir
  OUT``): at every evaluation the metrics row's numbers as scalars, and
  histograms of every weight and of its gradient on one fixed batch (the
  first of the training data, dropout off).
* ``--diagnose-every N``: every N evaluations, the gradient by lag
  (``diagnose.diagnose``) on a fixed sample of the validation data (else the
  training data), one line per diagnosis in ``OUT/diagnose.jsonl``;
  ``rnnlab plot RUN --lags FILE.png`` draws how the curve moved.

Neither imports anything until asked for.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .data.batching import batchify
from .data.prepare import Corpus
from .rundir import DIAGNOSE_NAME, TB_NAME, read_rows, write_rows

SAMPLE_STREAMS = 8  # columns of the diagnosis sample
SAMPLE_POSITIONS = 8  # loss positions per column
DIAGNOSE_MAX_LAG = 50  # the lags a diagnosis during training follows
SCALARS = ("train_loss", "valid_loss", "perplexity", "lr", "tokens_per_s", "grad_norm", "grad_norm_max", "clipped")


def diagnosis_sample(corpus: Corpus, max_lag: int) -> np.ndarray:
    """(T, B) ids from the start of ``corpus``: ``SAMPLE_STREAMS`` streams long enough for
    ``SAMPLE_POSITIONS`` loss positions after ``max_lag`` steps (fewer streams on a short corpus)."""
    steps = max_lag + SAMPLE_POSITIONS + 2
    streams = max(1, min(SAMPLE_STREAMS, corpus.num_tokens // steps))
    sample = batchify(np.asarray(corpus.ids), streams)[:steps]
    if sample.shape[0] < max_lag + 2:
        raise ValueError(f"a corpus of {corpus.num_tokens} tokens is too short for a diagnosis up to lag {max_lag}")
    return sample


class Watch:
    """The optional reports of one run: ``evaluated(run, row)`` after each evaluation, ``close()``
    at the end."""

    def __init__(self, out: Path, *, tensorboard: bool, diagnose_every: int, max_lag: int = DIAGNOSE_MAX_LAG):
        self.out = out
        self.log = None
        if tensorboard:
            from .tensorboard import EventLog
            self.log = EventLog(out / TB_NAME)
        self.diagnose_every = diagnose_every
        self.max_lag = max_lag
        self.evaluations = 0

    def evaluated(self, run, row: dict) -> None:
        """Report the evaluation whose metrics row is ``row``."""
        self.evaluations += 1
        step = row["step"]
        if self.log is not None:
            self.log.scalars({f"metrics/{k}": row.get(k) for k in SCALARS}, step, wall_time=row["wall_time"])
            for name, ratio in (row.get("update_ratio") or {}).items():
                self.log.scalar(f"update_ratio/{name}", ratio, step, wall_time=row["wall_time"])
            params = run.state.model.params
            for name, value in params.items():
                self.log.histogram(f"weights/{name}", value, step, wall_time=row["wall_time"])
            for name, grad in sample_gradients(run).items():
                self.log.histogram(f"gradients/{name}", grad, step, wall_time=row["wall_time"])
            self.log.flush()
        if self.diagnose_every and (self.evaluations - 1) % self.diagnose_every == 0:
            self.diagnose(run, row)

    def diagnose(self, run, row: dict) -> None:
        from .diagnose import diagnose

        corpus = run.data.valid if run.data.valid is not None else run.data.train
        result = diagnose(run.state.model, diagnosis_sample(corpus, self.max_lag), max_lag=self.max_lag,
                          label=f"step {row['step']}")
        line = {"step": row["step"], "epoch": row["epoch"], "wall_time": row["wall_time"], **result.to_dict()}
        write_diagnoses(self.out, read_diagnoses(self.out) + [line])
        if self.log is not None:
            self.log.scalar("diagnose/effective_memory", result.effective_memory, row["step"], row["wall_time"])

    def close(self) -> None:
        if self.log is not None:
            self.log.close()


def read_diagnoses(out, max_step: int | None = None) -> list[dict]:
    """The lines of ``OUT/diagnose.jsonl`` (up to ``max_step``)."""
    return read_rows(Path(out) / DIAGNOSE_NAME, max_step)


def write_diagnoses(out, lines: list[dict]) -> None:
    write_rows(Path(out) / DIAGNOSE_NAME, lines)


def sample_gradients(run) -> dict:
    """Every parameter's gradient on the first batch of the training data, from a zero state,
    dropout off: the same batch at every evaluation, so the histograms compare."""
    from .train import epoch_batches

    cfg, model = run.cfg, run.state.model
    _, batches = epoch_batches(run.data.train, cfg, 0)
    inputs, targets, mask = next(iter(batches))
    truncate = None if cfg.bptt_mode == "full" else cfg.bptt
    _, grads, _ = model.loss_and_grads(inputs, targets, mask=mask, bptt=cfg.bptt_mode, truncate=truncate)
    return grads
