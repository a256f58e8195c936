"""``rnnlab diagnose`` and ``rnnlab plot``: look at trained runs (and fresh models) side by side.

    rnnlab diagnose runs/rnn runs/lstm --plot lags.png     # trained runs, on their own corpora
    rnnlab diagnose --cell rnn --cell lstm --corpus input.txt --format chars --hidden 128
    rnnlab plot runs/rnn runs/lstm --out curves.png --y perplexity --x time
"""
from __future__ import annotations

from pathlib import Path

from .diagnose import Diagnosis, diagnose
from .errors import RnnlabError
from .model import LanguageModel
from .plot import plot_gradient_lags, plot_runs
from .rundir import evaluations, read_metrics
from .train import format_for_path, load_trained, open_file
from .watch import diagnosis_sample, read_diagnoses

FRESH_EMBED_FORMATS = ("tokens", "chars")  # fresh models of these formats get an embedding layer


def diagnose_command(args) -> list[Diagnosis]:
    """A diagnosis per run in ``args.runs`` and per fresh ``args.cell``, each on a sample of its corpus."""
    if not args.runs and not args.cell:
        raise RnnlabError("diagnose needs run directories or --cell (with --corpus) for a fresh model")
    if args.cell and not args.corpus:
        raise RnnlabError("a fresh model (--cell) needs --corpus to sample")
    results = []
    for directory in args.runs:
        trained = load_trained(directory)
        corpus_path = args.corpus or trained.config.corpus
        fmt = args.format or trained.format
        corpus = open_file(corpus_path, fmt, vocab=trained.vocab).corpus
        results.append(diagnose(trained.model, diagnosis_sample(corpus, args.max_lag), max_lag=args.max_lag,
                                threshold=args.threshold, label=Path(directory).name or str(directory)))
    if args.cell:
        fmt = args.format or format_for_path(args.corpus)
        corpus = open_file(args.corpus, fmt, args.vocab_size or None).corpus
        sample = diagnosis_sample(corpus, args.max_lag)
        embed = args.embed if args.embed is not None else args.hidden
        for cell in args.cell:
            model = LanguageModel(len(corpus.vocab), args.hidden, embed_size=embed or None, cell=cell,
                                  num_layers=args.layers, dtype="float64", seed=args.seed)
            results.append(diagnose(model, sample, max_lag=args.max_lag, threshold=args.threshold,
                                    label=f"{cell} (untrained)"))
    return results


def plot_command(args) -> Path:
    """Several runs' curves (or, with ``args.lags``, their recorded diagnoses) on one PNG."""
    if args.lags:
        results = []
        for directory in args.runs:
            lines = read_diagnoses(directory)
            if not lines:
                raise RnnlabError(f"{directory} holds no diagnose.jsonl (train with --diagnose-every N)")
            prefix = f"{Path(directory).name}, " if len(args.runs) > 1 else ""
            results += [{**line, "label": f"{prefix}step {line['step']}"} for line in lines]
        written = plot_gradient_lags(results, args.out)
    else:
        runs = []
        for directory in args.runs:
            rows = read_metrics(directory)
            if not evaluations(rows):
                raise RnnlabError(f"{directory} holds no metrics.jsonl with evaluations")
            runs.append((Path(directory).name or str(directory), rows))
        written = plot_runs(runs, args.out, y=args.y, x=args.x)
    if written is None:
        raise RnnlabError("plotting needs matplotlib: pip install 'rnnlab[cli]'")
    return written
