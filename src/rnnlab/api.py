"""What the command line does, as Python: train, load a run, evaluate, generate, score.

    from rnnlab import api

    run = api.train("train.txt", out="runs/wiki", format="tokens", valid="valid.txt", test="test.txt")
    run = api.load("runs/wiki/best")              # or "runs/wiki": the last checkpoint
    run.evaluate("test.txt")                      # Evaluation(tokens=..., loss=..., perplexity=...)
    run.generate(prompt="The", max_length=40)     # ["The ..."]
    run.score(["a line of text", "another"])      # [Score(logprob=..., tokens=..., perplexity=...), ...]

``train`` takes ``TrainConfig``'s fields by name (``cell="gru"``,
``epochs=3``, ...), prints nothing unless ``quiet=False``, and returns the
run loaded back from its directory. Errors are ``rnnlab.errors.RnnlabError``
(or ``ValueError`` for a bad setting) with the same one-line messages as the
command line's.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from .errors import DataError, RnnlabError
from .generate import generate, score_lines
from .model import LanguageModel
from .train import TrainConfig, Trained, evaluate, load_trained, open_file, perplexity
from .train import train as _train


READS = {"csv": "sentences of words", "text": "sentences of words", "tokens": "a stream of words",
         "chars": "a stream of characters"}  # what each format makes of a file: a model reads one of them


class Evaluation(NamedTuple):
    tokens: int  # predicted tokens
    loss: float  # mean -log p in nats
    perplexity: float


class Score(NamedTuple):
    logprob: float  # log-probability of the line, in nats
    tokens: int  # tokens scored
    perplexity: float


class Run:
    """A trained model with its vocabulary and format, loaded from a run directory."""

    def __init__(self, trained: Trained, directory: Path):
        self.directory = directory
        self.model: LanguageModel = trained.model
        self.vocab = trained.vocab
        self.format: str = trained.format
        self.config: TrainConfig = trained.config

    def __repr__(self) -> str:
        return f"Run({str(self.directory)!r}, format={self.format!r}, {self.model!r})"

    def evaluate(self, path, format: str | None = None) -> Evaluation:
        """Loss and perplexity on a corpus file, encoded with the model's vocabulary, in the model's
        format unless ``format`` names another that reads the same units (``READS``)."""
        fmt = format or self.format
        if READS[fmt] != READS[self.format]:
            raise RnnlabError(f"the model in {self.directory} was trained on {READS[self.format]} (--format "
                              f"{self.format}); --format {fmt} reads {READS[fmt]}; leave --format out to use "
                              f"the model's")
        try:
            corpus = open_file(path, fmt, vocab=self.vocab).corpus
        except DataError as e:
            if format is None and fmt == "csv" and not str(path).lower().endswith(".csv"):
                raise DataError(f"{e} (the model was trained on Reddit CSV; for one sentence per line pass "
                                f"--format text)") from None
            raise
        total, count = evaluate(self.model, corpus)
        if count == 0:
            raise RnnlabError(f"{path}: nothing to predict (fewer than 2 tokens)")
        return Evaluation(count, total / count, perplexity(total / count))

    def generate(self, n: int | None = None, **kw) -> list[str]:
        """Sampled texts, as ``rnnlab generate``: ``temperature``, ``top_k``, ``prompt``,
        ``max_length``, ``seed`` (see ``rnnlab.generate.generate``)."""
        return generate(self.model, self.vocab, self.format, n=n, **kw)

    def score(self, lines) -> list[Score]:
        """Each line's log-probability, tokens and perplexity, as ``rnnlab score``."""
        return [Score(*row) for row in score_lines(self.model, self.vocab, list(lines), self.format)]


def load(directory) -> Run:
    """The run in ``directory`` (its last checkpoint; ``directory/best`` holds the best one)."""
    return Run(load_trained(directory), Path(directory))


def train(corpus=None, out: str = "runs/rnnlab", *, resume: bool = False, force: bool = False,
          corpus_changed: bool = False, quiet: bool = True, **settings) -> Run:
    """Train as ``rnnlab train`` does (``settings``: ``TrainConfig``'s fields) and return the run.

    With ``resume`` the corpus may be left out (the checkpoint's is used).
    """
    config = TrainConfig(corpus=None if corpus is None else str(corpus), out=str(out), **settings)
    result = _train(config, resume=resume, force=force, corpus_changed=corpus_changed,
                    progress=False if quiet else None, log=(lambda *a: None) if quiet else print)
    return load(result.out)
