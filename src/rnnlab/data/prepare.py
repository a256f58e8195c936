"""Turning a corpus file into arrays of token ids, and saving them.

A ``Corpus`` holds every token id in one flat int32 array ``ids`` (N,).
Sentence corpora (``kind == "sentences"``) add ``offsets`` (S+1,), int64:
sentence ``i`` is ``ids[offsets[i]:offsets[i+1]]``, markers included. Stream
corpora (``kind == "stream"``) are one long sequence to be cut by ``batchify``.

Formats (``prepare_corpus(path, fmt, ...)``):

======== =========== ========================================================
fmt      kind        tokens
======== =========== ========================================================
csv      sentences   the tutorial's: ``body`` column, lowercased, Punkt
                     sentences, Treebank words, markers, length > 3
text     sentences   one sentence per non-blank line, Treebank words with
                     case kept, wrapped in the markers (no length filter)
tokens   stream      word_language_model: ``line.split() + ['<eos>']``
chars    stream      every character a token
======== =========== ========================================================

Saved corpora (``save_prepared``) are plain ``.npy`` files plus JSON, never
pickles; ``load_prepared`` memory-maps them, so a corpus larger than memory
trains.
"""
from __future__ import annotations

import itertools
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..atomic import atomic_write
from .readers import read_chars, read_lines, read_reddit_csv, read_tokens
from .tokenize import MIN_TOKENS_EXCLUSIVE, UNKNOWN_TOKEN, line_sentence, raw_comment_sentences
from .vocab import Vocab

FORMATS = ("csv", "text", "tokens", "chars")
SENTENCE_FORMATS = ("csv", "text")
DEFAULT_UNK = {"csv": UNKNOWN_TOKEN, "text": UNKNOWN_TOKEN, "tokens": "<unk>", "chars": "<unk>"}
CORPUS_FORMAT = "rnnlab-corpus"
CORPUS_VERSION = 1
IDS_FILE, OFFSETS_FILE, VOCAB_FILE, META_FILE = "ids.npy", "offsets.npy", "vocab.json", "corpus.json"


@dataclass(eq=False)
class Corpus:
    """Token ids of a corpus with their vocabulary.

    ``ids``: (N,) int32 (a read-only memory map after ``load_prepared``).
    ``offsets``: (S+1,) int64 for ``kind == "sentences"``, else ``None``.
    """

    vocab: Vocab
    ids: np.ndarray
    kind: str
    offsets: np.ndarray | None = None

    def __post_init__(self):
        if self.kind not in ("sentences", "stream"):
            raise ValueError(f"kind must be 'sentences' or 'stream', not {self.kind!r}")
        if (self.kind == "sentences") != (self.offsets is not None):
            raise ValueError("a sentence corpus needs offsets and a stream corpus has none")

    @property
    def num_tokens(self) -> int:
        return int(self.ids.shape[0])

    @property
    def num_sentences(self) -> int | None:
        return None if self.offsets is None else int(self.offsets.shape[0] - 1)

    @property
    def sentences(self) -> list[np.ndarray]:
        """Each sentence's ids, (len_i,) views of ``ids`` (only for sentence corpora)."""
        if self.offsets is None:
            raise DataError("a stream corpus has no sentences")
        bounds = self.offsets.tolist()
        return [self.ids[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


# -- the tutorial's loader ---------------------------------------------------------


def _ragged(arrays: list[np.ndarray]) -> np.ndarray:
    """A (S,) object array holding int32 arrays (``np.asarray`` of ragged lists fails in numpy 2)."""
    out = np.empty(len(arrays), dtype=object)
    for i, a in enumerate(arrays):
        out[i] = a
    return out


def tutorial_sentences(path: str | os.PathLike, vocabulary_size: int | None, *, verbose: bool = True):
    """The tutorial's ``getSentenceData``, returning ``(X_train, y_train, vocab)``.

    ``X_train`` and ``y_train`` are (S,) object arrays; ``X_train[i]`` is
    sentence ``i``'s ids without its last token, ``y_train[i]`` without its
    first (``x = s[:-1]``, ``y = s[1:]``), each an int32 array. Prints the
    tutorial's progress lines when ``verbose``.
    """
    say = print if verbose else (lambda *_: None)
    say("Reading CSV file...")
    parsed = [s for comment in read_reddit_csv(path) for s in raw_comment_sentences(comment)]
    say("Parsed %d sentences." % len(parsed))
    sentences = [s for s in parsed if len(s) > MIN_TOKENS_EXCLUSIVE]
    if not sentences:
        raise DataError(f"{path}: no sentences longer than {MIN_TOKENS_EXCLUSIVE} tokens")
    word_freq = Counter(itertools.chain.from_iterable(sentences))
    say("Found %d unique words tokens." % len(word_freq))
    vocab = Vocab.build(word_freq, vocabulary_size, unk=UNKNOWN_TOKEN)
    say("Using vocabulary size %d." % len(vocab))
    word, count = vocab.least_frequent()
    say("The least frequent word in our vocabulary is '%s' and appeared %d times." % (word, count))
    encoded = [vocab.encode(s) for s in sentences]
    return _ragged([s[:-1] for s in encoded]), _ragged([s[1:] for s in encoded]), vocab


def getSentenceData(path: str | os.PathLike, vocabulary_size: int = 8000):  # noqa: N802 (the tutorial's name)
    """The tutorial's API: ``X_train, y_train = getSentenceData(path, vocabulary_size)``."""
    X_train, y_train, _ = tutorial_sentences(path, vocabulary_size, verbose=True)
    return X_train, y_train


# -- any format ---------------------------------------------------------------------


def _sentence_corpus(sentences: list[list[str]], vocab: Vocab) -> Corpus:
    lengths = np.fromiter((len(s) for s in sentences), dtype=np.int64, count=len(sentences))
    offsets = np.zeros(len(sentences) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ids = vocab.encode(itertools.chain.from_iterable(sentences))
    return Corpus(vocab=vocab, ids=ids, kind="sentences", offsets=offsets)


def _encode_token_stream(path, vocab: Vocab, block: int = 1 << 16) -> np.ndarray:
    """Second pass over a ``tokens`` file: ids in int32 blocks (no list of all strings)."""
    pieces, buffer = [], []
    for tokens in read_tokens(path):
        buffer.extend(tokens)
        if len(buffer) >= block:
            pieces.append(vocab.encode(buffer))
            buffer = []
    pieces.append(vocab.encode(buffer))
    return np.concatenate(pieces)


def prepare_corpus(path: str | os.PathLike, fmt: str, vocab_size: int | None = None, *,
                   vocab: Vocab | None = None, unk: str | None = None) -> Corpus:
    """Read ``path`` in format ``fmt`` (``csv``, ``text``, ``tokens``, ``chars``) into a ``Corpus``.

    Builds a vocabulary of ``vocab_size`` ids (None/0: every token) with ``unk``
    (default ``UNKNOWN_TOKEN`` for sentence formats, ``<unk>`` for stream
    formats) as the last id, unless an existing ``vocab`` is given (to encode a
    validation file with the training vocabulary). An empty corpus raises
    ``DataError``.
    """
    if fmt not in FORMATS:
        raise DataError(f"unknown corpus format {fmt!r}; expected one of {', '.join(FORMATS)}")
    unk = DEFAULT_UNK[fmt] if unk is None else unk
    if fmt in SENTENCE_FORMATS:
        if fmt == "csv":
            sentences = [s for comment in read_reddit_csv(path) for s in raw_comment_sentences(comment)
                         if len(s) > MIN_TOKENS_EXCLUSIVE]
        else:
            sentences = [line_sentence(line) for line in read_lines(path)]
        if not sentences:
            raise DataError(f"{path}: no sentences in the corpus")
        if vocab is None:
            vocab = Vocab.build(itertools.chain.from_iterable(sentences), vocab_size, unk=unk)
        return _sentence_corpus(sentences, vocab)
    if fmt == "tokens":
        if vocab is None:
            counter: Counter = Counter()
            for tokens in read_tokens(path):
                counter.update(tokens)
            if not counter:
                raise DataError(f"{path}: no tokens in the corpus")
            vocab = Vocab.build(counter, vocab_size, unk=unk)
        ids = _encode_token_stream(path, vocab)
    else:
        text = read_chars(path)
        if not text:
            raise DataError(f"{path}: no characters in the corpus")
        if vocab is None:
            vocab = Vocab.build(Counter(text), vocab_size, unk=unk)
        ids = vocab.encode(text)
    if ids.shape[0] == 0:
        raise DataError(f"{path}: no tokens in the corpus")
    return Corpus(vocab=vocab, ids=ids, kind="stream")


def split_corpus(corpus: Corpus, valid_fraction: float) -> tuple[Corpus, Corpus]:
    """``(train, valid)``: the last ``valid_fraction`` of the sentences (sentence
    corpora) or of the tokens (stream corpora) is the validation part.

    Deterministic, no shuffling; train keeps ``int(n * (1 - valid_fraction))``
    items (the first 90% for 0.1, as nanoGPT splits Tiny Shakespeare). Both
    parts share the vocabulary and are views of ``corpus.ids``.
    """
    if not (isinstance(valid_fraction, (int, float)) and 0.0 < valid_fraction < 1.0):
        raise DataError(f"validation fraction must be between 0 and 1 (exclusive), not {valid_fraction!r}")
    if corpus.kind == "stream":
        n = corpus.num_tokens
        cut = int(n * (1.0 - valid_fraction))
        if cut < 1 or cut >= n:
            raise DataError(f"a corpus of {n} tokens is too short to split off {valid_fraction:g} for validation")
        return (Corpus(corpus.vocab, corpus.ids[:cut], "stream"),
                Corpus(corpus.vocab, corpus.ids[cut:], "stream"))
    s = corpus.num_sentences
    cut = int(s * (1.0 - valid_fraction))
    if cut < 1 or cut >= s:
        raise DataError(f"a corpus of {s} sentences is too short to split off {valid_fraction:g} for validation")
    offsets = corpus.offsets
    mid = int(offsets[cut])
    train = Corpus(corpus.vocab, corpus.ids[:mid], "sentences", np.asarray(offsets[: cut + 1], dtype=np.int64))
    valid = Corpus(corpus.vocab, corpus.ids[mid:], "sentences", np.asarray(offsets[cut:], dtype=np.int64) - mid)
    return train, valid


# -- files --------------------------------------------------------------------------


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_write(path, "wb") as f:
        np.save(f, array, allow_pickle=False)


def save_prepared(corpus: Corpus, folder: str | os.PathLike) -> Path:
    """Write ``ids.npy`` (+ ``offsets.npy``), ``vocab.json`` and ``corpus.json``
    into ``folder`` (created if needed), each atomically; returns the folder.

    ``corpus.json`` is written last and records the kind and sizes, so a folder
    whose save was interrupted fails to load rather than loading mixed files.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{folder}: cannot create folder ({e.strerror or e})") from None
    _save_npy(folder / IDS_FILE, np.asarray(corpus.ids, dtype=np.int32))
    if corpus.offsets is not None:
        _save_npy(folder / OFFSETS_FILE, np.asarray(corpus.offsets, dtype=np.int64))
    else:
        (folder / OFFSETS_FILE).unlink(missing_ok=True)
    corpus.vocab.save(folder / VOCAB_FILE)
    meta = {"format": CORPUS_FORMAT, "version": CORPUS_VERSION, "kind": corpus.kind,
            "num_tokens": corpus.num_tokens, "num_sentences": corpus.num_sentences,
            "vocab_size": len(corpus.vocab)}
    with atomic_write(folder / META_FILE, "w") as f:
        json.dump(meta, f)
        f.write("\n")
    return folder


def _load_npy(path: Path, mmap: bool) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: missing from the prepared corpus")
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable .npy array ({e})") from None
    if not isinstance(array, np.ndarray) or array.ndim != 1 or array.dtype.kind not in "iu":
        raise DataError(f"{path}: expected a 1-D integer array")
    return array


def load_prepared(folder: str | os.PathLike, mmap: bool = True, *, validate: bool = True) -> Corpus:
    """Read a folder written by ``save_prepared``.

    With ``mmap`` the id arrays are read-only memory maps (``np.load(...,
    mmap_mode="r", allow_pickle=False)``): pages are read as training touches
    them. ``validate`` checks that every id is inside the vocabulary (one pass
    over the file) and that the offsets are consistent.
    """
    folder = Path(folder)
    meta_path = folder / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{folder}: not a prepared corpus (no {META_FILE})") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{meta_path}: unreadable ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != CORPUS_FORMAT:
        raise DataError(f"{meta_path}: not an rnnlab prepared corpus")
    if meta.get("version") != CORPUS_VERSION:
        raise DataError(f"{meta_path}: corpus format version {meta.get('version')!r}, expected {CORPUS_VERSION}")
    kind = meta.get("kind")
    if kind not in ("sentences", "stream"):
        raise DataError(f"{meta_path}: unknown corpus kind {kind!r}")
    vocab = Vocab.load(folder / VOCAB_FILE)
    ids = _load_npy(folder / IDS_FILE, mmap)
    if ids.shape[0] != meta.get("num_tokens"):
        raise DataError(f"{folder / IDS_FILE}: holds {ids.shape[0]} ids but {META_FILE} says {meta.get('num_tokens')}")
    offsets = None
    if kind == "sentences":
        offsets = np.asarray(_load_npy(folder / OFFSETS_FILE, mmap=False), dtype=np.int64)
        if (offsets.shape[0] != (meta.get("num_sentences") or 0) + 1 or offsets[0] != 0
                or offsets[-1] != ids.shape[0] or np.any(np.diff(offsets) < 0)):
            raise DataError(f"{folder / OFFSETS_FILE}: offsets do not match the ids")
    if validate and ids.shape[0]:
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= len(vocab):
            raise DataError(f"{folder / IDS_FILE}: token id {high if high >= len(vocab) else low} "
                            f"is outside the vocabulary of {len(vocab)}")
    return Corpus(vocab=vocab, ids=ids, kind=kind, offsets=offsets)
