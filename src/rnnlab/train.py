"""The training loop: corpus -> batches -> BPTT -> optimiser -> evaluation -> checkpoint.

    from rnnlab.train import TrainConfig, train
    result = train(TrainConfig(corpus="input.txt", out="runs/shakespeare", format="chars"))

The corpus format decides how batches are made:

* **sentence mode** (``csv``, ``text``), the tutorial's: every sentence is
  independent and starts from a zero hidden state; ``sentence_batches``
  groups sentences of similar length under a mask. A batch's loss is the
  sum over each sentence's tokens, averaged over its sentences, because the
  tutorial's ``bptt`` sums over the sentence: with ``batch_size=1`` and
  ``optimizer="sgd"`` a step is the tutorial's ``sgd_step``, one sentence at
  a time in corpus order (``shuffle`` defaults to off at batch size 1, on
  above).
* **stream mode** (``tokens``, ``chars``), PyTorch word_language_model's:
  ``batchify`` into B parallel streams, chunks of ``bptt`` steps, the hidden
  state carried from chunk to chunk (the gradient stops at the chunk's
  start), the loss averaged over the tokens; the hidden state starts at zero
  each epoch.

``None`` in a ``TrainConfig`` means "the default of the format" (below); on
``resume`` it means "as saved in the checkpoint".

=========  =====  ======  ======  ====  =======  =====  ====  ======  =========  =====  ====  =============  ======
format     cell   hidden  embed   bias  dropout  batch  bptt  mode    optimizer  lr     clip  schedule       epochs
=========  =====  ======  ======  ====  =======  =====  ====  ======  =========  =====  ====  =============  ======
csv, text  rnn    100     0 (no)  no    0        1      4     window  sgd        0.005  0     halve-on-rise  10
tokens     lstm   200 x2  200     yes   0.2      20     35    chunk   sgd        20     0.25  plateau        6
chars      rnn    256     32      yes   0        32     64    chunk   adam       0.003  1.0   plateau        1
=========  =====  ======  ======  ====  =======  =====  ====  ======  =========  =====  ====  =============  ======

csv and text: the tutorial's model and training. tokens: word_language_model's
model and recipe (a 2-layer LSTM of 200, dropout 0.2, SGD at 20, clipping to
0.25, the rate divided by 4 when the validation loss is not below its best):
on wikitext-2-valid's held-out tenth it ends 6 epochs at perplexity 360 (mean
of 3 seeds), where the best tanh RNN recipe measured (hidden 128, SGD at 5)
ends at 462, in about 1.7 times the RNN's training time (BENCHMARKS.md). With
this recipe a tanh RNN diverges (on wikitext-2-valid its training loss went
9.5 -> 12.6 -> 15.6 within the first epoch), so ``--cell rnn`` wants
``--optimizer adam --lr 0.002 --clip 1``.
chars: a char-rnn-like setting that learns quickly.
Output layers (``SOFTMAX_DEFAULTS``): ``softmax="adaptive"`` has a bias in its
head, and in the tokens recipe trains at lr 10; ``softmax="class"`` cuts
about 3 sqrt(V) classes (``class_softmax.default_classes``).
Common defaults: one layer, ``valid_fraction`` 0.1 (the last 10%), seed 0,
float32, training loss evaluated on at most ``eval_tokens`` = 100,000 tokens
of the training data (evenly spread), the validation split in full.

Evaluations happen before the first step, after every epoch, every
``eval_every`` steps if set, and when ``max_steps`` ends the run (that one,
unless it falls where an evaluation was due anyway, leaves the schedule
alone, so that resuming from it changes nothing). Each one

1. computes the mean training loss (the tutorial's ``calculate_total_loss``,
   per token) and the validation loss and perplexity;
2. applies the schedule (``optim.SCHEDULES``; by default the tutorial's rule:
   the learning rate halves when the training loss rose since the previous
   evaluation; ``plateau``: word_language_model's division by 4 when the
   validation loss is not below its best);
3. rewrites ``OUT/metrics.jsonl`` (one JSON object per evaluation: epoch,
   step, tokens, train_loss, valid_loss, perplexity, lr, tokens_per_s) and
   ``OUT/loss.png``, and saves the checkpoint (parameters, model config,
   vocabulary, optimiser state, schedule, position in the data and this
   config), each write atomic.

Resuming continues exactly: the order of an epoch's batches is drawn from
``(seed, epoch)`` alone, so 2 epochs straight and 1 epoch + resume give
bit-identical parameters. No generator state needs saving: the dropout
masks of step s come from the generator seeded ``(seed, 1, s)`` and
initialisation uses ``seed`` once.

``train`` is the outline; each part is a function below:

    cfg, ckpt = resolve_run(config, resume, force)      # the config, and the checkpoint to continue
    corpus, train_data, valid_data = load_data(cfg, ckpt)
    state = build_state(cfg, vocab_size, ckpt, lr)       # TrainState: model, optimiser, schedule, position
    evaluate_and_checkpoint(...)                         # a fresh run's step 0
    while epochs remain and max_steps is not reached:
        train_epoch(run)                                 # take_step per batch, evaluate_and_checkpoint

``TrainState`` is exactly what a checkpoint stores besides the config and the
vocabulary; ``step_kind`` is the one place that chooses between the model's
ways to take a step.
"""
from __future__ import annotations

import math
import sys
import time
from contextlib import closing, nullcontext
from collections.abc import Callable
from typing import NamedTuple
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from .class_softmax import MASSES
from .checkpoint import JSON_NAME, Checkpoint, check_compatible, load_checkpoint, save_checkpoint
from .data.batching import batchify, num_stream_chunks, sentence_batches, stream_chunks
from .data.cache import OpenedCorpus, open_corpus, read_manifest
from .data.prepare import FORMATS, SENTENCE_FORMATS, Corpus, split_corpus
from .data.vocab import Vocab
from .errors import CheckpointError, DataError, RnnlabError
from .interrupts import Interrupted, StopRequests
from .model import LanguageModel, ModelConfig
from .optim import (OPTIMIZERS, SCHEDULE_AT, SCHEDULES, SGD, Optimizer, Schedule, clip_grad_norm, grad_norm, make_optimizer,
                    make_schedule)
from .plot import plot_losses
from .rundir import (BEST_NAME, DIAGNOSE_NAME, EVENT_KEY, PLOT_NAME, VOCAB_NAME, check_fresh, check_source, now,
                     read_metrics, resolve_path, write_metrics)
from .watch import DIAGNOSE_MAX_LAG, Watch, diagnosis_sample, read_diagnoses, write_diagnoses

FILE_LABELS = {"corpus": "corpus", "valid": "validation file", "test": "test file"}
METRIC_KEYS = ("epoch", "step", "tokens", "train_loss", "valid_loss", "perplexity", "lr", "tokens_per_s",
               "wall_time")

_SENTENCE_DEFAULTS = dict(hidden=100, embed=0, bias=False, batch_size=1, bptt=4, bptt_mode="window",
                          optimizer="sgd", lr=0.005, clip=0.0, epochs=10)
FORMAT_DEFAULTS = {
    "csv": _SENTENCE_DEFAULTS,
    "text": _SENTENCE_DEFAULTS,
    "tokens": dict(cell="lstm", layers=2, hidden=200, embed=200, bias=True, dropout=0.2, batch_size=20, bptt=35,
                   bptt_mode="chunk", optimizer="sgd", lr=20.0, clip=0.25, schedule="plateau", epochs=6),
    "chars": dict(hidden=256, embed=32, bias=True, batch_size=32, bptt=64, bptt_mode="chunk",
                  optimizer="adam", lr=3e-3, clip=1.0, schedule="plateau", epochs=1),
}
COMMON_DEFAULTS = dict(vocab_size=0, cell="rnn", softmax="full", classes=0, class_mass="sqrt", cutoffs=(),
                       div_value=4.0, head_bias=False, layers=1, dropout=0.0, tied=False, schedule="halve-on-rise",
                       schedule_at="epoch", max_steps=0, eval_every=0, eval_tokens=100_000, early_stop=0,
                       tensorboard=False, diagnose_every=0,
                       valid_fraction=0.1, seed=0, dtype="float32")
# An output layer's own defaults, over the format's: the adaptive layer trains with a bias in its
# head, and in the tokens recipe at half its rate (on wikitext-2-valid, 3 epochs, 3 seeds, cutoffs
# 689,3444: its perplexity was 449 without the bias at lr 20, 415 with it at lr 10, against the full
# softmax's 387 at lr 20; with the bias lr 20 diverged: benchmarks/softmax_quality.py, BENCHMARKS.md).
SOFTMAX_DEFAULTS = {"adaptive": dict(head_bias=True)}
FORMAT_SOFTMAX_DEFAULTS = {("tokens", "adaptive"): dict(lr=10.0)}
# What a resumed run cannot change: the model and the data it was trained on.
FIXED_ON_RESUME = ("format", "vocab_size", "cell", "softmax", "classes", "class_mass", "cutoffs", "div_value", "head_bias",
                   "hidden", "embed", "layers", "bias", "dropout", "tied", "dtype", "optimizer", "schedule",
                   "valid_fraction", "valid")
DROPOUT_STREAM = 1  # dropout masks come from the generator seeded (seed, DROPOUT_STREAM, step)
EVAL_BATCH = 64  # sentences per forward pass when evaluating
EVAL_STREAMS = 32  # parallel streams when evaluating a stream (word_language_model uses 10; 32 is 2x faster,
#                   and only one token in 1000+ loses its context at a stream start)
EVAL_STEPS = 256  # steps per forward pass when evaluating a stream


@dataclass
class TrainConfig:
    """What to train on and how; ``None`` = the format's default (see the module docstring)."""

    corpus: str | None = None  # corpus file, or a folder made by ``rnnlab prepare``
    valid: str | None = None  # validation file (same format, the corpus's vocabulary) instead of a held-out part
    test: str | None = None  # test file, scored once at the end (by the best model when there is validation)
    out: str = "runs/rnnlab"  # run directory: checkpoint, metrics.jsonl, loss.png, vocab.json
    format: str | None = None  # csv | text | tokens | chars; None: csv for *.csv, else text
    vocab_size: int | None = None  # ids including the unknown token; 0 = every distinct token
    cell: str | None = None  # a name in cells.CELLS
    softmax: str | None = None  # the output layer: a name in output.OUTPUT_LAYERS
    classes: int | None = None  # the class layer's classes; 0 = about 3 sqrt(V)
    class_mass: str | None = None  # how the class layer bins words: sqrt (RNNLM's default) or frequency (the paper's)
    cutoffs: tuple | None = None  # the adaptive layer's cut points; () = its default for the vocabulary
    div_value: float | None = None  # the adaptive layer's shrink per tail cluster
    head_bias: bool | None = None  # the adaptive layer's head has a bias
    hidden: int | None = None
    embed: int | None = None  # embedding size; 0 = none (the tutorial's one-hot U, size hidden)
    layers: int | None = None
    bias: bool | None = None  # biases in the recurrence and decoder (the tutorial's model has none)
    dropout: float | None = None  # inverted dropout on the embedding output, between layers, before the decoder
    tied: bool | None = None  # the decoder's weight is the encoder's (needs embed == hidden)
    batch_size: int | None = None
    bptt: int | None = None  # window/chunk length in sentence mode; chunk length in stream mode
    bptt_mode: str | None = None  # window | chunk | full
    optimizer: str | None = None  # a name in optim.OPTIMIZERS
    schedule: str | None = None  # a name in optim.SCHEDULES: halve-on-rise | plateau | none
    schedule_at: str | None = None  # epoch: the schedule sees the evaluations at epoch ends; eval: every one
    lr: float | None = None
    clip: float | None = None  # max global gradient norm; 0 = no clipping
    epochs: int | None = None  # total epochs (a resumed run trains up to this many)
    max_steps: int | None = None  # total optimiser steps; 0 = no limit
    eval_every: int | None = None  # also evaluate (and checkpoint) every N steps; 0 = epoch ends only
    eval_tokens: int | None = None  # cap on the training tokens scored by an evaluation; 0 = all
    early_stop: int | None = None  # stop after N evaluations without a better validation loss; 0 = never
    tensorboard: bool | None = None  # also write TensorBoard event files into OUT/tb
    diagnose_every: int | None = None  # the gradient by lag every N evaluations, into OUT/diagnose.jsonl; 0 = never
    valid_fraction: float | None = None  # last fraction of the corpus held out; 0 = no validation
    shuffle: bool | None = None  # shuffle the batch order each epoch; None: on when batch_size > 1
    seed: int | None = None
    dtype: str | None = None  # float32 | float64

    def resolved(self) -> "TrainConfig":
        """A copy with every ``None`` replaced by its default, validated (``ValueError``)."""
        if not self.corpus:
            raise ValueError("no corpus file given")
        fmt = self.format or format_for_path(self.corpus)
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
        values = {**COMMON_DEFAULTS, **FORMAT_DEFAULTS[fmt]}
        given = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
        if self.valid and self.valid_fraction:
            raise ValueError("--valid and --valid-fraction both choose the validation data; give one")
        if self.valid:
            values["valid_fraction"] = 0.0
        softmax = given.get("softmax", values["softmax"])
        values.update(SOFTMAX_DEFAULTS.get(softmax, {}))
        values.update(FORMAT_SOFTMAX_DEFAULTS.get((fmt, softmax), {}))
        values.update(given)
        values["format"] = fmt
        values["cutoffs"] = tuple(int(c) for c in values["cutoffs"])
        if values.get("shuffle") is None:
            values["shuffle"] = fmt in SENTENCE_FORMATS and values["batch_size"] > 1
        cfg = TrainConfig(**values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad value of a resolved config."""
        def whole(name, low):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                what = "a positive integer" if low == 1 else f"an integer >= {low}"
                raise ValueError(f"{name.replace('_', '-')} must be {what}, not {value!r}")

        for name in ("hidden", "layers", "batch_size", "bptt", "epochs"):
            whole(name, 1)
        for name in ("vocab_size", "embed", "max_steps", "eval_every", "eval_tokens", "early_stop", "seed",
                     "classes", "diagnose_every"):
            whole(name, 0)
        for name, low in (("lr", 0.0), ("clip", 0.0)):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < low:
                raise ValueError(f"{name} must be a finite number >= {low:g}, not {value!r}")
        if not (isinstance(self.valid_fraction, (int, float)) and 0.0 <= self.valid_fraction < 1.0):
            raise ValueError(f"valid-fraction must be in [0, 1), not {self.valid_fraction!r}")
        for name in ("bias", "tied", "head_bias", "tensorboard"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, not {getattr(self, name)!r}")
        if self.schedule_at not in SCHEDULE_AT:
            raise ValueError(f"schedule-at must be one of {', '.join(SCHEDULE_AT)}, not {self.schedule_at!r}")
        if self.early_stop and not (self.valid or self.valid_fraction):
            raise ValueError("--early-stop needs validation data (--valid or --valid-fraction)")
        if self.classes and self.softmax != "class":
            raise ValueError("--classes is a setting of --softmax class")
        if self.class_mass not in MASSES:
            raise ValueError(f"class-mass must be one of {', '.join(MASSES)}, not {self.class_mass!r}")
        if self.cutoffs and self.softmax != "adaptive":
            raise ValueError("--cutoffs is a setting of --softmax adaptive")
        # the model's own checks (cell, output layer, dtype, dropout, tying), on a stand-in vocabulary
        stand_in = self.cutoffs or ((1,) if self.softmax in ("class", "adaptive") else ())
        model = self.model_config(stand_in[-1] + 1 if stand_in else 2, stand_in)
        model.cell_type.check_bptt(self.bptt_mode, None if self.bptt_mode == "full" else self.bptt, self.layers)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, not {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, not {self.schedule!r}")

    @property
    def sentence_mode(self) -> bool:
        return self.format in SENTENCE_FORMATS

    def model_config(self, vocab_size: int, cutoffs: tuple = ()) -> ModelConfig:
        """The ModelConfig this (resolved) config trains, for a vocabulary of ``vocab_size`` ids and
        the output layer's ``cutoffs`` (``output_cutoffs``)."""
        return ModelConfig(vocab_size, self.hidden, self.embed or None, self.cell, self.layers, self.bias,
                           self.dtype, self.softmax, self.dropout, self.tied, tuple(cutoffs), self.div_value,
                           self.head_bias)


def format_for_path(path) -> str:
    """The default format of a corpus: a prepared folder's own, ``csv`` for ``*.csv``, else ``text``."""
    if Path(path).is_dir():
        manifest = read_manifest(path)
        if manifest is None:
            raise DataError(f"{path}: a prepared corpus that does not record its format; pass --format")
        return manifest.preparation.fmt
    return "csv" if str(path).lower().endswith(".csv") else "text"


@dataclass
class TrainResult:
    out: Path
    model: LanguageModel
    vocab: Vocab
    config: TrainConfig  # resolved
    metrics: list[dict]  # every line of metrics.jsonl, this run's and (on resume) the earlier ones
    step: int
    epoch: float


@dataclass
class Trained:
    """A trained model loaded back from its run directory (``load_trained``)."""

    model: LanguageModel
    vocab: Vocab
    format: str
    config: TrainConfig
    state: dict


# -- evaluation ---------------------------------------------------------------------


def evaluate(model: LanguageModel, corpus: Corpus, *, max_tokens: int | None = None) -> tuple[float, int]:
    """Forward only: (sum of -log p over the predicted tokens, their count).

    Sentences: every sentence from a zero hidden state, all its targets
    (markers included) scored; with ``max_tokens`` every k-th sentence, k
    chosen so about ``max_tokens`` tokens are scored. Streams: up to
    ``EVAL_STREAMS`` parallel streams of at least 1000 tokens (``batchify``,
    as word_language_model evaluates), hidden state carried along; with
    ``max_tokens`` the first ``max_tokens / streams`` steps of each stream.
    """
    total, count = 0.0, 0
    if corpus.kind == "sentences":
        sentences = corpus.sentences
        if max_tokens and corpus.num_tokens > max_tokens:
            sentences = sentences[:: math.ceil(corpus.num_tokens / max_tokens)]
        for inputs, targets, mask in sentence_batches(sentences, EVAL_BATCH):
            nll, n, _ = model.evaluate(inputs, targets, mask=mask)
            total, count = total + nll, count + n
        return total, count
    n_ids = corpus.num_tokens
    if n_ids < 2:
        return 0.0, 0
    streams = max(1, min(EVAL_STREAMS, n_ids // 1000))
    batched = batchify(corpus.ids, streams)
    rows = batched.shape[0]
    if max_tokens:
        rows = min(rows, max_tokens // streams + 1)
    hidden = None
    for i in range(0, rows - 1, EVAL_STEPS):
        t = min(EVAL_STEPS, rows - 1 - i)
        nll, n, hidden = model.evaluate(batched[i:i + t], batched[i + 1:i + 1 + t], hidden=hidden)
        total, count = total + nll, count + n
    return total, count


def mean_loss(model: LanguageModel, corpus: Corpus, *, max_tokens: int | None = None) -> float | None:
    """Mean -log p per predicted token (nats), or None when nothing is predicted."""
    total, count = evaluate(model, corpus, max_tokens=max_tokens)
    return total / count if count else None


def perplexity(loss: float | None) -> float | None:
    if loss is None:
        return None
    return math.exp(loss) if loss < 700 else math.inf


# -- batches ------------------------------------------------------------------------


def epoch_batches(corpus: Corpus, cfg: TrainConfig, epoch: int):
    """``(number of batches, iterator of (inputs, targets, mask or None))`` for one epoch.

    Sentence mode: ``sentence_batches``, shuffled (when ``cfg.shuffle``) by a
    generator seeded with ``(seed, epoch)`` only, so any epoch's order can be
    recomputed on resume. Stream mode: ``stream_chunks`` of ``batchify``, in order.
    """
    if cfg.sentence_mode:
        lengths = np.diff(np.asarray(corpus.offsets))
        n = -(-int(np.count_nonzero(lengths >= 2)) // cfg.batch_size)
        order = np.random.default_rng([cfg.seed, epoch]) if cfg.shuffle else None
        batches = sentence_batches(corpus.sentences, cfg.batch_size, shuffle_rng=order)
        return n, batches
    batched = batchify(corpus.ids, cfg.batch_size)
    return num_stream_chunks(batched, cfg.bptt), ((x, y, None) for x, y in stream_chunks(batched, cfg.bptt))


# -- files ----------------------------------------------------------------------------


def _config_from_state(state: dict, where) -> TrainConfig:
    saved = state.get("train_config") if isinstance(state, dict) else None
    if not isinstance(saved, dict):
        raise CheckpointError(f"{where}: the checkpoint holds no training configuration")
    names = {f.name for f in fields(TrainConfig)}
    try:
        cfg = TrainConfig(**{k: v for k, v in saved.items() if k in names})
        # a setting newer than the checkpoint takes its default; JSON's lists are tuples again
        cfg = replace(cfg, **{k: v for k, v in COMMON_DEFAULTS.items() if getattr(cfg, k) is None})
        cfg = replace(cfg, cutoffs=tuple(cfg.cutoffs))
        cfg.validate()
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: bad training configuration in the checkpoint ({e})") from None
    return cfg


def load_trained(directory) -> Trained:
    """Model, vocabulary, format and training config of the checkpoint in ``directory``.

    Every problem (no checkpoint, corrupt or foreign files, a vocabulary or
    config that does not fit the parameters) is a one-line ``RnnlabError``.
    """
    directory = Path(directory)
    ckpt = load_checkpoint(directory)
    where = directory / JSON_NAME
    vocab = Vocab.from_dict(ckpt.vocab, source=f"{where} (vocabulary)")
    try:
        mconfig = ModelConfig.from_dict(ckpt.config if isinstance(ckpt.config, dict) else {})
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: bad model configuration ({e})") from None
    if mconfig.vocab_size != len(vocab):
        raise CheckpointError(f"{where}: the model has {mconfig.vocab_size} output ids but the vocabulary "
                              f"{len(vocab)}")
    check_compatible(ckpt, mconfig.param_shapes(), None)
    cfg = _config_from_state(ckpt.state, where)
    if cfg.format not in FORMATS:
        raise CheckpointError(f"{where}: unknown corpus format {cfg.format!r}")
    model = LanguageModel.from_config(mconfig, ckpt.params)
    return Trained(model=model, vocab=vocab, format=cfg.format, config=cfg, state=ckpt.state)


# -- the run's state ---------------------------------------------------------------


@dataclass
class TrainState:
    """What a checkpoint stores of a run besides its config and vocabulary, and nothing else.

    ``checkpoint`` writes it and ``restore`` reads it back: a run stopped
    anywhere and resumed from its checkpoint goes on bit for bit as if it
    had never stopped (the order of an epoch's batches is a function of
    ``(seed, epoch)``, so no generator state is needed).
    """

    model: LanguageModel
    optimizer: Optimizer
    schedule: Schedule
    epoch: int = 0  # epochs completed
    batch: int = 0  # batches of epoch ``epoch`` done
    step: int = 0  # optimiser steps taken
    tokens: int = 0  # training tokens seen
    hidden: object = None  # stream mode: the carried state going into batch ``batch`` (None: zeros)
    best_loss: float | None = None  # the lowest validation loss so far (OUT/best holds that model)
    since_best: int = 0  # evaluations since then without a lower one (for early stopping)

    def position(self) -> dict:
        """The JSON-able part: where the run stands, the schedule, the carried state mid-epoch."""
        carried = self.hidden is not None and self.batch > 0
        return {"epoch": self.epoch, "batch": self.batch, "step": self.step, "tokens": self.tokens,
                "schedule": self.schedule.state_dict(), "best_loss": self.best_loss, "since_best": self.since_best,
                "hidden": np.asarray(self.hidden).tolist() if carried else None}

    def checkpoint(self, out: Path, cfg: "TrainConfig", vocab: Vocab, files: dict | None = None) -> None:
        """Save the state, with the config, the vocabulary and the records of the corpus files
        (``corpus_records``), into ``out`` (atomically)."""
        state = {**self.position(), "train_config": asdict(cfg), "format": cfg.format, "files": files or {}}
        save_checkpoint(out, params=self.model.params, config=self.model.config.to_dict(), vocab=vocab.to_dict(),
                        optimizer=self.optimizer.state_dict(), state=state)

    def restore(self, ckpt: Checkpoint, where, batch_size: int) -> None:
        """Read back what ``checkpoint`` saved (the model's parameters are already loaded)."""
        if ckpt.optimizer_meta is None:
            raise CheckpointError(f"{where} holds no optimizer state to resume from")
        self.optimizer.load_state_dict(ckpt.optimizer_arrays or {}, ckpt.optimizer_meta)
        saved = ckpt.state
        try:
            self.schedule.load_state_dict(saved["schedule"])
            self.epoch, self.batch, self.step, self.tokens = (int(saved[k]) for k in ("epoch", "batch", "step",
                                                                                      "tokens"))
            self.hidden = None if saved.get("hidden") is None else _saved_hidden(self.model, saved["hidden"],
                                                                                  batch_size)
            best = saved.get("best_loss")  # absent from older checkpoints
            self.best_loss = None if best is None else float(best)
            self.since_best = int(saved.get("since_best", 0))
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{where}: bad training state ({e})") from None


def _saved_hidden(model: LanguageModel, saved, batch_size: int):
    """The carried state read back from its JSON lists, checked against the model and the batch size."""
    config = model.config
    cell = config.cell_type
    array = np.asarray(saved, dtype=config.dtype)
    given = array if len(cell.state) == 1 else tuple(array)
    parts = cell.parts(given, config.num_layers, batch_size, config.hidden_size, array.dtype)
    return cell.hidden(parts)


class Data(NamedTuple):
    """The corpora of a run, all with the corpus's vocabulary."""

    corpus: Corpus  # the whole corpus file
    train: Corpus  # what the model trains on
    valid: Corpus | None  # the --valid file or the held-out part; None: no validation
    test: Corpus | None  # the --test file, scored once at the end
    sources: dict  # "corpus", "valid", "test" -> data.cache.SourceRecord of the file (None: not recorded)


@dataclass
class Run:
    """One training run in progress: what it reads, what it trains, where it writes."""

    cfg: TrainConfig  # resolved
    out: Path
    vocab: Vocab
    data: Data
    state: TrainState
    metrics: list[dict]  # every line of metrics.jsonl so far
    log: Callable
    files: dict = field(default_factory=dict)  # "corpus", "valid", "test" -> their records (corpus_records)
    stop: StopRequests = field(default_factory=lambda: StopRequests(enabled=False))
    resume_hint: str | None = None  # the command that continues this run, for the interruption message
    watch: Watch | None = None  # the optional reports: TensorBoard, diagnoses

    def save(self, directory: Path | None = None) -> None:
        """The checkpoint of the run as it stands, into OUT (or ``directory``)."""
        self.state.checkpoint(directory or self.out, self.cfg, self.vocab, self.files)


@dataclass
class Interval:
    """What happened since the last evaluation: tokens/s, the progress bar, gradient statistics."""

    started: float = field(default_factory=time.perf_counter)
    steps: int = 0
    tokens: int = 0
    loss_sum: float = 0.0  # summed -log p over those tokens
    norms: list = field(default_factory=list)  # global gradient norms before clipping (steps that form gradients)
    update_ratio: dict | None = None  # ||update|| / ||weight|| per parameter, on the interval's first step

    def add(self, loss_sum: float, tokens: int) -> None:
        self.steps, self.tokens, self.loss_sum = self.steps + 1, self.tokens + tokens, self.loss_sum + loss_sum

    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def gradient_stats(self, clip: float) -> dict:
        """The metrics row's gradient fields: mean and largest norm before clipping, the share of
        steps clipped, and the sampled update-to-weight ratios (absent where nothing was measured:
        the fused SGD step forms no gradient)."""
        stats = {}
        if self.norms:
            norms = np.asarray(self.norms)
            stats.update(grad_norm=float(norms.mean()), grad_norm_max=float(norms.max()),
                         clipped=float(np.mean(norms > clip)) if clip else 0.0)
        if self.update_ratio is not None:
            stats["update_ratio"] = self.update_ratio
        return stats


class Step(NamedTuple):
    loss_sum: float  # summed -log p over the batch's targets
    tokens: int  # its targets
    grad_norm: float | None  # the global gradient norm before clipping; None for the fused SGD step


# -- the parts of a run -------------------------------------------------------------


def resolve_run(config: TrainConfig, resume: bool, force: bool) -> tuple[TrainConfig, Checkpoint | None]:
    """The resolved config and, on ``resume``, the checkpoint it continues.

    On resume the saved config is the base; fields of ``config`` that are
    not None override it, except those in ``FIXED_ON_RESUME``. Without
    resume, a directory that already holds a run's files is refused unless
    ``force``. File paths become absolute, so the checkpoint names its
    corpus wherever the run is resumed from.
    """
    out = Path(config.out)
    config = replace(config, **{name: resolve_path(getattr(config, name)) for name in ("corpus", "valid", "test")})
    if not resume:
        cfg = config.resolved()
        check_fresh(out, force)
        return cfg, None
    if out.exists() and not out.is_dir():
        raise RnnlabError(f"{out} exists and is not a directory")
    ckpt = load_checkpoint(out)
    saved = _config_from_state(ckpt.state, out / JSON_NAME)
    given = {f.name: getattr(config, f.name) for f in fields(config)
             if getattr(config, f.name) is not None and f.name != "out"}
    for name in FIXED_ON_RESUME:
        if name in given and given[name] != getattr(saved, name):
            raise RnnlabError(f"cannot resume with {name.replace('_', '-')} {given[name]!r}: the checkpoint "
                              f"in {out} was trained with {getattr(saved, name)!r}")
    return replace(saved, **given, out=str(out)).resolved(), ckpt


def open_file(path, fmt: str, vocab_size: int | None = None, vocab: Vocab | None = None, *,
              own_vocab_first: bool = False) -> OpenedCorpus:
    """A corpus file (prepared once into the cache, ``data.cache``) or a prepared folder, encoded with
    ``vocab`` if given. ``own_vocab_first``: try the preparation with the file's own vocabulary
    first and keep it if that vocabulary is ``vocab`` (a resumed run's corpus: the fresh run
    cached exactly that, so resuming prepares nothing again)."""
    if vocab is None:
        return open_corpus(path, fmt, vocab_size)
    if own_vocab_first or Path(path).is_dir():
        opened = open_corpus(path, fmt, vocab_size)
        if opened.corpus.vocab == vocab:
            opened.corpus.vocab = vocab
            return opened
        if Path(path).is_dir():
            raise DataError(f"{path}: a prepared corpus with another vocabulary than the model's")
    return open_corpus(path, fmt, vocab=vocab)


def load_data(cfg: TrainConfig, ckpt: Checkpoint | None) -> Data:
    """The run's corpora. The vocabulary is built from the corpus once, then always taken from
    the checkpoint; validation and test files are encoded with it."""
    vocab = None
    if ckpt is not None:
        vocab = Vocab.from_dict(ckpt.vocab, source=f"{Path(cfg.out) / JSON_NAME} (vocabulary)")
    opened = {"corpus": open_file(cfg.corpus, cfg.format, cfg.vocab_size or None, vocab, own_vocab_first=True)}
    vocab = opened["corpus"].corpus.vocab
    for name in ("valid", "test"):
        if getattr(cfg, name):
            opened[name] = open_file(getattr(cfg, name), cfg.format, vocab=vocab)
    corpus = opened["corpus"].corpus
    test = opened["test"].corpus if "test" in opened else None
    sources = {name: o.source for name, o in opened.items()}
    if cfg.valid:
        return Data(corpus, corpus, opened["valid"].corpus, test, sources)
    if not cfg.valid_fraction:
        return Data(corpus, corpus, None, test, sources)
    return Data(corpus, *split_corpus(corpus, cfg.valid_fraction), test, sources)


def corpus_records(data: Data, ckpt: Checkpoint | None, changed_ok: bool) -> dict:
    """The records of the run's corpus files (name -> dict) for its checkpoint; on resume the corpus
    and the validation file are checked against the checkpoint's (content that changed is refused
    unless ``changed_ok``)."""
    saved = (ckpt.state.get("files") if ckpt is not None else None) or {}
    records = {}
    for name, source in data.sources.items():
        if source is None:  # a prepared folder from before folders recorded their source
            continue
        if name != "test" and name in saved:
            check_source(saved[name], source.to_dict(), FILE_LABELS[name], changed_ok)
        records[name] = source.to_dict()
    return records


def output_cutoffs(cfg: TrainConfig, vocab: Vocab) -> tuple:
    """Where the output layer cuts the ids: the class layer's classes from the vocabulary's
    counts, the adaptive layer's given or default cutoffs, nothing for the full softmax."""
    if cfg.softmax == "class":
        from .class_softmax import class_cutoffs, default_classes
        return tuple(class_cutoffs(vocab.counts, cfg.classes or default_classes(len(vocab)), mass=cfg.class_mass))
    if cfg.softmax == "adaptive":
        from .adaptive_softmax import default_cutoffs
        return tuple(cfg.cutoffs) or tuple(default_cutoffs(len(vocab)))
    return ()


def build_state(cfg: TrainConfig, vocab: Vocab, ckpt: Checkpoint | None, lr: float | None) -> TrainState:
    """Model, optimiser and schedule, fresh (initialised from ``cfg.seed``) or as ``ckpt`` saved them;
    ``lr`` (not None) replaces the saved learning rate on resume."""
    where = Path(cfg.out) / JSON_NAME
    if ckpt is None:
        mconfig = cfg.model_config(len(vocab), output_cutoffs(cfg, vocab))
        model = LanguageModel.from_config(mconfig, seed=cfg.seed)
    else:
        mconfig = _saved_model_config(ckpt)
        expected = cfg.model_config(len(vocab), mconfig.cutoffs if mconfig is not None else ())
        if mconfig != expected:
            raise CheckpointError(f"the model in {where} ({ckpt.config}) does not match "
                                  f"the configuration ({expected.to_dict()})")
        check_compatible(ckpt, mconfig.param_shapes(), None)
        model = LanguageModel.from_config(mconfig, ckpt.params)
    optimizer = make_optimizer(cfg.optimizer, model.params, cfg.lr)
    state = TrainState(model, optimizer, make_schedule(cfg.schedule, optimizer))
    if ckpt is not None:
        state.restore(ckpt, where, cfg.batch_size)
        if lr is not None:  # an explicit rate replaces the (possibly halved) saved one
            optimizer.lr = float(lr)
    return state


def _saved_model_config(ckpt: Checkpoint) -> ModelConfig | None:
    try:
        return ModelConfig.from_dict(ckpt.config if isinstance(ckpt.config, dict) else {})
    except (TypeError, ValueError):
        return None


def step_kind(cfg: TrainConfig, state: TrainState) -> str:
    """The one switch between the model's ways to step. Plain SGD, where the output layer
    has a fused step: "fused" (``LanguageModel.sgd_step``) without clipping, "clipped"
    (``LanguageModel.clipped_sgd_step``, sparse where the gradients are) with it;
    "gradients" otherwise: the dense gradients, then clipping and the optimiser."""
    optimizer = state.optimizer
    if not (isinstance(optimizer, SGD) and optimizer.plain and state.model.output.fused_sgd):
        return "gradients"
    return "clipped" if cfg.clip else "fused"


def take_step(run: Run, inputs, targets, mask) -> Step:
    """One optimiser step on one batch; advances the carried state in stream mode.

    Sentence mode: the loss summed over each sentence's tokens, averaged
    over the batch's sentences (the gradient scaled by 1/B). Stream mode:
    averaged over the tokens, from the carried state.
    """
    cfg, state = run.cfg, run.state
    model, optimizer = state.model, state.optimizer
    truncate = None if cfg.bptt_mode == "full" else cfg.bptt
    if cfg.dropout:  # masks drawn from (seed, step) alone, so a resumed run draws the same ones
        kw = dict(dropout_rng=np.random.default_rng([cfg.seed, DROPOUT_STREAM, state.step]))
    else:
        kw = {}
    if cfg.sentence_mode:
        kw.update(mask=mask, reduction="sum")
        scale, n_tokens = 1.0 / inputs.shape[1], int(mask.sum())
    else:
        kw.update(hidden=state.hidden)
        scale, n_tokens = 1.0, inputs.size
    norm = None
    kind = step_kind(cfg, state)
    if kind in ("fused", "clipped"):  # the model steps the parameters itself
        if kind == "fused":
            loss, final = model.sgd_step(inputs, targets, optimizer.lr * scale, bptt=cfg.bptt_mode,
                                         truncate=truncate, **kw)
        else:
            loss, final, norm = model.clipped_sgd_step(inputs, targets, optimizer.lr, cfg.clip, grad_scale=scale,
                                                       bptt=cfg.bptt_mode, truncate=truncate, **kw)
        optimizer.steps += 1
        _check_finite(loss, state.step + 1, run.out)
    else:
        loss, grads, final = model.loss_and_grads(inputs, targets, bptt=cfg.bptt_mode, truncate=truncate, **kw)
        _check_finite(loss, state.step + 1, run.out)
        if scale != 1:
            for g in grads.values():
                g *= scale
        norm = clip_grad_norm(grads, cfg.clip) if cfg.clip else grad_norm(grads)
        optimizer.step(grads)
    if not cfg.sentence_mode:
        state.hidden = final
    return Step(loss if cfg.sentence_mode else loss * n_tokens, n_tokens, norm)


def update_ratios(before: dict, params: dict) -> dict:
    """||after - before|| / ||after|| per parameter (name -> float): how far one step moved each."""
    ratios = {}
    for name, old in before.items():
        size = float(np.linalg.norm(params[name]))
        ratios[name] = float(np.linalg.norm(params[name] - old)) / size if size else 0.0
    return ratios


def _check_finite(loss: float, step: int, out: Path) -> None:
    if not math.isfinite(loss):
        raise RnnlabError(f"the training loss became {loss} at step {step}; lower --lr or set "
                          f"--clip (the checkpoint in {out} is the last finite one)")


def evaluate_and_checkpoint(run: Run, epoch_value: float, interval: Interval, regular: bool = True,
                            epoch_end: bool = False) -> None:
    """Evaluate, keep the best model, apply the schedule, then write metrics.jsonl, the checkpoint
    and the plot.

    ``epoch_end``: the evaluation at the end of an epoch, which feeds the
    schedule (any evaluation does with ``schedule_at`` "eval"). ``regular``
    False: an evaluation that happens only because the run stops here
    (``max_steps``); it leaves the schedule, the best model and the count of
    evaluations without improvement alone, so that the run resumed from this
    checkpoint goes on exactly as one that never stopped.
    """
    cfg, state = run.cfg, run.state
    train_loss = mean_loss(state.model, run.data.train, max_tokens=cfg.eval_tokens or None)
    valid_loss = mean_loss(state.model, run.data.valid) if run.data.valid is not None else None
    if train_loss is not None:
        _check_finite(train_loss, state.step, run.out)
    seconds = interval.seconds() if interval.steps else 0.0
    row = {"epoch": epoch_value, "step": state.step, "tokens": state.tokens, "train_loss": train_loss,
           "valid_loss": valid_loss, "perplexity": perplexity(valid_loss), "lr": state.optimizer.lr,
           "tokens_per_s": round(interval.tokens / seconds, 1) if seconds > 0 else None, "wall_time": now(),
           **interval.gradient_stats(cfg.clip)}
    run.metrics.append(row)
    run.log(_progress_line(row, run.data.valid is not None))
    improved = regular and valid_loss is not None and (state.best_loss is None or valid_loss < state.best_loss)
    if improved:
        state.best_loss, state.since_best = valid_loss, 0
    elif regular and valid_loss is not None:
        state.since_best += 1
    scheduled = regular and (epoch_end or cfg.schedule_at == "eval")
    if scheduled and train_loss is not None and state.schedule.update(train_loss, valid_loss):
        run.log(f"Setting learning rate to {state.optimizer.lr:g} ({state.schedule.reason})")
    run.out.mkdir(parents=True, exist_ok=True)
    write_metrics(run.out, run.metrics)
    run.save()
    if improved:
        run.save(run.out / BEST_NAME)
    plot_losses(run.metrics, run.out / PLOT_NAME, title=f"{Path(cfg.corpus).name} ({cfg.format})")
    if run.watch is not None:
        run.watch.evaluated(run, row)


def _progress_line(row: dict, with_valid: bool) -> str:
    text = f"epoch {row['epoch']:g}  step {row['step']}  train loss {_fmt(row['train_loss'])}"
    if with_valid:
        text += f"  valid loss {_fmt(row['valid_loss'])}  ppl {_fmt(row['perplexity'], 2)}"
    text += f"  lr {row['lr']:g}"
    if row["tokens_per_s"] is not None:
        text += f"  {row['tokens_per_s']:,.0f} tok/s"
    return text


def early_stop_due(run: Run) -> bool:
    """Whether ``early_stop`` evaluations in a row have not improved on the best validation loss."""
    return bool(run.cfg.early_stop) and run.state.since_best >= run.cfg.early_stop


def stop_if_requested(run: Run) -> None:
    """After a SIGINT or SIGTERM: save the checkpoint at this step and raise ``Interrupted``."""
    if not run.stop.requested:
        return
    run.save()
    hint = f"; continue with: {run.resume_hint}" if run.resume_hint else ""
    raise Interrupted(f"stopped by {run.stop.name} at step {run.state.step}; checkpoint saved in {run.out}{hint}",
                      run.stop.requested)


def train_epoch(run: Run, show_progress: bool) -> bool:
    """Train from the run's position to the end of its epoch, or until ``max_steps`` or an early
    stop; evaluate and checkpoint every ``eval_every`` steps, at the epoch's end and at the stop.
    Returns whether the run should stop (``max_steps`` or ``early_stop``)."""
    cfg, state = run.cfg, run.state
    n_batches, batches = epoch_batches(run.data.train, cfg, state.epoch)
    if state.hidden is None and not cfg.sentence_mode:
        state.hidden = state.model.init_hidden(cfg.batch_size)
    bar = _progress_bar(n_batches, state.batch, f"epoch {state.epoch + 1}/{cfg.epochs}", show_progress)
    interval, shown, stopped = Interval(), 0.0, False
    try:
        for b, (inputs, targets, mask) in enumerate(batches):
            if b < state.batch:  # done before the run was resumed
                continue
            before = None if interval.steps else {k: p.copy() for k, p in state.model.params.items()}
            step = take_step(run, inputs, targets, mask)
            if before is not None:
                interval.update_ratio = update_ratios(before, state.model.params)
            if step.grad_norm is not None:
                interval.norms.append(step.grad_norm)
            state.step, state.tokens, state.batch = state.step + 1, state.tokens + step.tokens, b + 1
            interval.add(step.loss_sum, step.tokens)
            if bar is not None:
                shown = _show_progress(bar, interval, shown)
            stop_if_requested(run)
            if cfg.max_steps and state.step >= cfg.max_steps:
                stopped = True
                break
            if cfg.eval_every and state.step % cfg.eval_every == 0 and state.batch < n_batches:
                if bar is not None:
                    bar.clear()
                evaluate_and_checkpoint(run, round(state.epoch + state.batch / n_batches, 4), interval)
                interval = Interval()
                if early_stop_due(run):
                    return True
    finally:
        if bar is not None:
            bar.close()
    if state.batch >= n_batches:  # the epoch is complete
        state.epoch, state.batch, state.hidden = state.epoch + 1, 0, None
        evaluate_and_checkpoint(run, state.epoch, interval, epoch_end=True)
    elif interval.steps:  # stopped by max_steps inside the epoch: regular only where eval_every falls
        regular = bool(cfg.eval_every) and state.step % cfg.eval_every == 0
        evaluate_and_checkpoint(run, round(state.epoch + state.batch / n_batches, 4), interval, regular)
    return stopped or early_stop_due(run)


def _progress_bar(total, initial, desc, enabled):
    try:
        from tqdm import tqdm
    except ImportError:
        enabled = False
        tqdm = None
    if not enabled:
        return None
    return tqdm(total=total, initial=initial, desc=desc, file=sys.stderr, unit="batch", leave=False,
                dynamic_ncols=True)


def _show_progress(bar, interval: Interval, shown: float) -> float:
    """Advance the bar; refresh its loss and tokens/s at most twice a second. Returns when it last did."""
    bar.update(1)
    now_ = time.perf_counter()
    if now_ - shown <= 0.5:
        return shown
    bar.set_postfix(loss=f"{interval.loss_sum / interval.tokens:.3f}",
                    tok_s=f"{interval.tokens / (now_ - interval.started):,.0f}", refresh=False)
    return now_


def _announce(run: Run, resumed: bool) -> None:
    cfg, state, log, corpus = run.cfg, run.state, run.log, run.data.corpus
    kind = "sentences" if cfg.sentence_mode else "tokens"
    log(f"corpus {cfg.corpus} ({cfg.format}): {corpus.num_tokens:,} tokens"
        + (f" in {corpus.num_sentences:,} sentences" if cfg.sentence_mode else "")
        + f"; vocabulary of {len(run.vocab):,} ids" + _least_frequent(run.vocab))
    split = f"train {run.data.train.num_tokens:,} tokens"
    if run.data.valid is not None:
        split += f", validation {run.data.valid.num_tokens:,} tokens"
    if run.data.test is not None:
        split += f", test {run.data.test.num_tokens:,} tokens"
    log(split + f"; {state.model.num_params():,} parameters; {cfg.optimizer} lr {cfg.lr:g}, "
        f"batch {cfg.batch_size} {kind}, bptt {cfg.bptt_mode} {cfg.bptt}")
    if resumed:
        log(f"resuming {run.out} at epoch {state.epoch} (+{state.batch} batches), step {state.step}")
        if state.epoch >= cfg.epochs or (cfg.max_steps and state.step >= cfg.max_steps):
            log(f"nothing to do: the run has reached its {cfg.epochs} epochs or {cfg.max_steps} steps; "
                f"pass a larger --epochs or --max-steps to train further")


def score_test(run: Run) -> dict:
    """The test file's loss and perplexity, by the best model when there is one (else the last),
    as a metrics row."""
    model, which = run.state.model, "last"
    best = run.out / BEST_NAME
    if run.state.best_loss is not None and (best / JSON_NAME).exists():
        model, which = LanguageModel.from_config(model.config, load_checkpoint(best).params), "best"
    loss = mean_loss(model, run.data.test)
    row = {EVENT_KEY: "test", "step": run.state.step, "model": which, "test_loss": loss,
           "test_perplexity": perplexity(loss), "wall_time": now()}
    run.log(f"test loss {_fmt(loss)}  ppl {_fmt(row['test_perplexity'], 2)} ({which} model)")
    return row


# -- the loop -------------------------------------------------------------------------


def train(config: TrainConfig, *, resume: bool = False, force: bool = False, corpus_changed: bool = False,
          progress: bool | None = None, log=print, resume_hint: str | None = None) -> TrainResult:
    """Train as ``config`` says; see the module docstring.

    ``resume``: continue the checkpoint in ``config.out`` (see ``resolve_run``),
    refusing corpus files whose content changed unless ``corpus_changed``;
    without it, a directory that already holds a run's files is refused
    unless ``force``. ``progress``: show tqdm bars on stderr (None: when
    stderr is a terminal). ``log``: where the per-evaluation lines go
    (``print``; pass ``lambda *a: None`` to be quiet). SIGINT and SIGTERM
    (in the main thread) save a checkpoint at the current step and raise
    ``interrupts.Interrupted``, whose message ends with ``resume_hint``.

    Nothing is written until the corpus, the config and (on resume) the
    checkpoint have all been read and checked.
    """
    cfg, ckpt = resolve_run(config, resume, force)
    data = load_data(cfg, ckpt)
    files = corpus_records(data, ckpt, corpus_changed)
    state = build_state(cfg, data.corpus.vocab, ckpt, config.lr if resume else None)
    out = Path(cfg.out)
    metrics = read_metrics(out, max_step=state.step) if resume else []
    run = Run(cfg, out, data.corpus.vocab, data, state, metrics, log, files, resume_hint=resume_hint)
    _announce(run, resumed=resume)
    if resume and (out / DIAGNOSE_NAME).exists():
        write_diagnoses(out, read_diagnoses(out, max_step=state.step))  # what the checkpoint had seen
    if cfg.diagnose_every:  # a corpus too short for the sample is refused before anything is written
        diagnosis_sample(data.valid if data.valid is not None else data.train, DIAGNOSE_MAX_LAG)
    if cfg.tensorboard or cfg.diagnose_every:
        run.watch = Watch(out, tensorboard=cfg.tensorboard, diagnose_every=cfg.diagnose_every)
    with StopRequests() as run.stop, closing(run.watch) if run.watch else nullcontext():
        if resume:
            run.metrics.append({EVENT_KEY: "resume", "epoch": state.epoch, "step": state.step,
                                "tokens": state.tokens, "wall_time": now()})
        else:
            out.mkdir(parents=True, exist_ok=True)
            data.corpus.vocab.save(out / VOCAB_NAME)
            evaluate_and_checkpoint(run, 0, Interval(), epoch_end=True)  # the start: epoch 0 ends here
        show = sys.stderr.isatty() if progress is None else progress
        stopped = (bool(cfg.max_steps) and state.step >= cfg.max_steps) or early_stop_due(run)
        while state.epoch < cfg.epochs and not stopped:
            stop_if_requested(run)
            stopped = train_epoch(run, show)
        stop_if_requested(run)
    if early_stop_due(run):
        log(f"stopped early: {cfg.early_stop} evaluations without a validation loss below "
            f"{_fmt(state.best_loss)} (the model in {out / BEST_NAME})")
    if data.test is not None:
        run.metrics.append(score_test(run))
        write_metrics(out, run.metrics)
    n_batches = max(1, epoch_batches(data.train, cfg, state.epoch)[0])
    epoch_value = state.epoch + (state.batch / n_batches if state.batch else 0)
    return TrainResult(out=out, model=state.model, vocab=run.vocab, config=cfg, metrics=run.metrics,
                       step=state.step, epoch=round(epoch_value, 4))


def _least_frequent(vocab: Vocab) -> str:
    """The tutorial's report of the least frequent word kept, as a suffix for the corpus line."""
    try:
        word, count = vocab.least_frequent()
    except DataError:
        return ""
    return f" (least frequent kept: {word!r}, {count} times)"


def _fmt(value, digits=4):
    return "n/a" if value is None else f"{value:.{digits}f}"
