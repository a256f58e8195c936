"""Sampling text from a trained model, and scoring lines of text.

    from rnnlab.train import load_trained
    run = load_trained("runs/reddit")
    texts = generate(run.model, run.vocab, run.format, n=10, seed=1)
    scores = score_lines(run.model, run.vocab, ["the cat sat on the mat ."], run.format)

Sentence models (csv, text) do the tutorial's generation: start at
``SENTENCE_START``, sample one word at a time until ``SENTENCE_END`` or
``max_length`` words, never emitting ``UNKNOWN_TOKEN`` (nor a second
``SENTENCE_START``). The tutorial draws again whenever it samples the unknown
token; setting its probability to zero and renormalising samples from exactly
the same distribution, in bounded time. Sentences come out without markers,
words joined by spaces and lightly detokenized (``word .`` -> ``word.``).

Stream models (tokens, chars) continue a prompt (by default a line end) for
``max_length`` tokens: characters are joined as they are; word tokens are
joined by spaces with ``<eos>`` shown as a line end.

``temperature`` divides the log-probabilities (0 picks the most likely token);
``top_k`` keeps the k most likely tokens. The random draws come from
``np.random.default_rng(seed)``: same seed, same text.
"""
from __future__ import annotations

import math
import re
import warnings

import numpy as np

from .data.batching import sentence_batches
from .data.prepare import SENTENCE_FORMATS
from .data.tokenize import SENTENCE_END, SENTENCE_START, line_sentence, word_tokenize
from .data.vocab import Vocab
from .model import LanguageModel

EOS = "<eos>"  # word_language_model's line end token
DEFAULT_MAX_LENGTH = {"csv": 50, "text": 50, "tokens": 100, "chars": 500}
DEFAULT_COUNT = {"csv": 10, "text": 10, "tokens": 1, "chars": 1}
SCORE_BATCH = 64


def check_sampling(temperature: float, top_k: int) -> None:
    """``ValueError`` unless ``temperature`` >= 0 (finite) and ``top_k`` >= 0."""
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be a finite number >= 0, not {temperature}")
    if not isinstance(top_k, (int, np.integer)) or top_k < 0:
        raise ValueError(f"top-k must be an integer >= 0, not {top_k}")


def sample_next(logp: np.ndarray, rng: np.random.Generator, *, temperature: float = 1.0, top_k: int = 0,
                banned=()) -> np.ndarray:
    """One token id per row of ``logp`` (B, V) log-probabilities -> (B,) int64.

    ``banned`` ids get probability zero (the rest is renormalised);
    ``temperature`` 0 is argmax; ``top_k`` > 0 keeps the k largest per row.
    """
    check_sampling(temperature, top_k)
    z = np.array(logp, dtype=np.float64, ndmin=2)
    if len(banned):
        z[:, list(banned)] = -np.inf
    if temperature == 0:
        return z.argmax(axis=1)
    z /= temperature
    if 0 < top_k < z.shape[1]:
        kth = np.partition(z, z.shape[1] - top_k, axis=1)[:, z.shape[1] - top_k]
        z[z < kth[:, None]] = -np.inf
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    cdf = np.cumsum(p, axis=1)
    u = rng.random(z.shape[0]) * cdf[:, -1]
    ids = (cdf <= u[:, None]).sum(axis=1)  # first index whose cumulative mass exceeds u
    return np.minimum(ids, z.shape[1] - 1)


class UnknownPromptWarning(UserWarning):
    """Words of a prompt that the model's vocabulary lacks: the model reads its unknown token there."""


def _warn_unknown(tokens: list[str], vocab: Vocab) -> None:
    unknown = list(dict.fromkeys(t for t in tokens if t not in vocab and t != vocab.unk))
    if unknown:
        shown = ", ".join(repr(t) for t in unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
        warnings.warn(f"the prompt has {len(unknown)} token{'s' if len(unknown) > 1 else ''} the model does not know, "
                      f"read as {vocab.unk!r}: {shown}", UnknownPromptWarning, stacklevel=3)


def _prompt_tokens(prompt: str, fmt: str) -> list[str]:
    if fmt == "chars":
        return list(prompt)
    if fmt == "tokens":
        lines = prompt.split("\n")
        return [t for i, line in enumerate(lines) for t in line.split() + ([EOS] if i < len(lines) - 1 else [])]
    return word_tokenize(prompt.lower() if fmt == "csv" else prompt)


def generate_sentences(model: LanguageModel, vocab: Vocab, n: int, *, rng: np.random.Generator,
                       temperature: float = 1.0, top_k: int = 0, max_length: int = 50,
                       prompt: list[str] = ()) -> list[list[str]]:
    """``n`` sentences sampled side by side, each a list of words (markers excluded, prompt included)."""
    start = vocab.token_to_id.get(SENTENCE_START)
    end = vocab.token_to_id.get(SENTENCE_END)
    if start is None:
        raise ValueError("the vocabulary has no SENTENCE_START: not a sentence model")
    banned = sorted({vocab.unk_id, start})
    context = [start, *vocab.encode(prompt).tolist()]
    logp, hidden = model.log_probs(np.tile(np.asarray(context)[:, None], (1, n)))
    logp = logp[-1]
    words: list[list[int]] = [[] for _ in range(n)]
    done = np.zeros(n, dtype=bool)
    for _ in range(max_length + 1):  # max_length words, then one more chance to end
        ids = sample_next(logp, rng, temperature=temperature, top_k=top_k, banned=banned)
        for i in np.flatnonzero(~done):
            if ids[i] == end:
                done[i] = True
            elif len(words[i]) < max_length:
                words[i].append(int(ids[i]))
            else:
                done[i] = True
        if done.all():
            break
        logp, hidden = model.step(ids, hidden)
    return [list(prompt) + vocab.decode(w) for w in words]


def generate_stream(model: LanguageModel, vocab: Vocab, prompt: list[str], length: int, *,
                    rng: np.random.Generator, temperature: float = 1.0, top_k: int = 0,
                    banned=(), n: int = 1) -> list[list[str]]:
    """``n`` continuations of ``prompt`` of ``length`` tokens each (prompt excluded)."""
    context = vocab.encode(prompt).tolist()
    logp, hidden = model.log_probs(np.tile(np.asarray(context)[:, None], (1, n)))
    logp = logp[-1]
    out = np.empty((length, n), dtype=np.int64)
    for t in range(length):
        ids = sample_next(logp, rng, temperature=temperature, top_k=top_k, banned=banned)
        out[t] = ids
        if t + 1 < length:
            logp, hidden = model.step(ids, hidden)
    return [vocab.decode(out[:, i]) for i in range(n)]


_NO_SPACE_BEFORE = re.compile(r" (?=[.,!?;:%)\]}]|'s\b|'re\b|'ve\b|'ll\b|'d\b|'m\b|n't\b|'\s|'$)", re.I)
_NO_SPACE_AFTER = re.compile(r"(?<=[(\[{$]) ")


def detokenize(words: list[str]) -> str:
    """Words of the Treebank tokenizer joined back into text, lightly: no space
    before punctuation and clitics (``do n't`` -> ``don't``), Treebank quotes
    back to ``"``."""
    text = " ".join('"' if w in ("``", "''") else w for w in words)
    text = _NO_SPACE_BEFORE.sub("", text)
    return _NO_SPACE_AFTER.sub("", text)


def render(tokens: list[str], fmt: str) -> str:
    """Generated tokens as text for a person: see the module docstring."""
    if fmt == "chars":
        return "".join(tokens)
    if fmt == "tokens":
        pieces = []
        for token in tokens:
            if token == EOS:
                pieces.append("\n")
            else:
                pieces.append(token if not pieces or pieces[-1] == "\n" else " " + token)
        return "".join(pieces)
    return detokenize(tokens)


def generate(model: LanguageModel, vocab: Vocab, fmt: str, *, n: int | None = None, temperature: float = 1.0,
             top_k: int = 0, prompt: str | None = None, max_length: int | None = None,
             seed: int | None = None) -> list[str]:
    """Sampled texts: ``n`` sentences (sentence models) or ``n`` continuations of ``prompt``
    (stream models; the prompt is included). Defaults: ``DEFAULT_COUNT`` and
    ``DEFAULT_MAX_LENGTH`` of the format."""
    n = DEFAULT_COUNT[fmt] if n is None else n
    max_length = DEFAULT_MAX_LENGTH[fmt] if max_length is None else max_length
    if n < 0:
        raise ValueError(f"the number of samples must be >= 0, not {n}")
    if max_length < 1:
        raise ValueError(f"max-length must be a positive integer, not {max_length}")
    check_sampling(temperature, top_k)
    if n == 0:
        return []
    rng = np.random.default_rng(seed)
    if fmt in SENTENCE_FORMATS:
        tokens = _prompt_tokens(prompt or "", fmt)
        _warn_unknown(tokens, vocab)
        words = generate_sentences(model, vocab, n, rng=rng, temperature=temperature, top_k=top_k,
                                   max_length=max_length, prompt=tokens)
        return [render(w, fmt) for w in words]
    context = _prompt_tokens(prompt, fmt) if prompt else []
    _warn_unknown(context, vocab)
    if not context:  # start after a line end
        context = ["\n"] if fmt == "chars" else [EOS]
    banned = [vocab.unk_id] if fmt == "chars" else []
    continuations = generate_stream(model, vocab, context, max_length, rng=rng, temperature=temperature,
                                    top_k=top_k, banned=banned, n=n)
    shown = context if prompt else []
    return [render(shown + c, fmt) for c in continuations]


def _line_tokens(line: str, fmt: str) -> list[str]:
    """A line as the model reads it, with the context token that precedes it first."""
    if fmt == "csv":
        return line_sentence(line.lower())
    if fmt == "text":
        return line_sentence(line)
    if fmt == "tokens":
        return [EOS, *line.split(), EOS]
    return ["\n", *line, "\n"]


def score_lines(model: LanguageModel, vocab: Vocab, lines, fmt: str) -> list[tuple[float, int, float]]:
    """``(log-probability in nats, tokens scored, perplexity)`` of each line.

    Each line is scored on its own from a zero hidden state: sentence models
    score its words and ``SENTENCE_END`` given ``SENTENCE_START`` (csv:
    lowercased, as in training); stream models score its tokens and the line
    end given a preceding line end (``<eos>`` for tokens, ``\\n`` for chars).
    Tokens outside the vocabulary count as the unknown token.
    """
    encoded = [vocab.encode(_line_tokens(line, fmt)) for line in lines]
    results: list[tuple[float, int, float] | None] = [None] * len(encoded)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    for lo in range(0, len(order), SCORE_BATCH):
        members = order[lo:lo + SCORE_BATCH]
        (inputs, targets, mask), = sentence_batches([encoded[i] for i in members], len(members))
        # sentence_batches sorts stably by length; ``members`` is already in length order.
        nll, _ = model.nll(inputs, targets)
        sums = (nll.astype(np.float64) * mask).sum(axis=0)
        counts = mask.sum(axis=0).astype(int)
        for col, i in enumerate(members):
            logprob, count = -float(sums[col]), int(counts[col])
            results[i] = (logprob, count, math.exp(-logprob / count) if -logprob / count < 700 else math.inf)
    return results
