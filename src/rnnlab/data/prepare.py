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
trains. ``write_prepared`` writes the same folder straight from the corpus
file, a block of lines at a time, in memory that does not grow with the
corpus (only the count of each distinct token does)::

    text blocks --count_block--> CountedBlock (its own small vocabulary)
        --> provisional ids (first appearance), appended to ids.npy
        --> vocabulary from the counts --> ids.npy remapped in place
"""
from __future__ import annotations

import io
import itertools
import json
import multiprocessing
import os
import warnings
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from ..errors import DataError
from ..atomic import atomic_write
from .readers import (
    EOS,
    iter_line_blocks,
    read_chars,
    read_lines,
    read_reddit_csv,
    read_tokens,
)
from .tokenize import MIN_TOKENS_EXCLUSIVE, UNKNOWN_TOKEN, line_sentence, raw_comment_sentences
from .vocab import Vocab

FORMATS = ("csv", "text", "tokens", "chars")
SENTENCE_FORMATS = ("csv", "text")
DEFAULT_UNK = {"csv": UNKNOWN_TOKEN, "text": UNKNOWN_TOKEN, "tokens": "<unk>", "chars": "<unk>"}
CORPUS_FORMAT = "rnnlab-corpus"
CORPUS_VERSION = 1
IDS_FILE, OFFSETS_FILE, VOCAB_FILE, META_FILE = "ids.npy", "offsets.npy", "vocab.json", "corpus.json"
IDS_DTYPE, OFFSETS_DTYPE = np.dtype("<i4"), np.dtype("<i8")
#: Text per block when streaming, as measured on WikiText: a block's tokens are Python strings
#: until it is encoded, so blocks are small in one process (256 KiB: as fast as any size, half
#: the memory of 4 MiB), and 4 MiB for workers, where each hand-off costs the main process.
FORMAT_BLOCK_BYTES = {"tokens": 256 << 10, "chars": 1 << 20, "text": 256 << 10, "csv": 256 << 10}
WORKER_BLOCK_BYTES = {"tokens": 4 << 20, "chars": 1 << 20, "text": 256 << 10, "csv": 256 << 10}
#: Files from this size on are prepared by several processes (characters never: counting them
#: is quicker than handing the text to a worker).
PARALLEL_BYTES = {"tokens": 32 << 20, "text": 1 << 20, "csv": 1 << 20}
MAX_WORKERS = 4


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


# -- any format, streamed into a folder ----------------------------------------------


@dataclass(eq=False)
class CountedBlock:
    """One block of a corpus, encoded against its own small vocabulary.

    ``tokens``: its D distinct tokens in order of first appearance;
    ``counts``: (D,) int64; ``ids``: (n,) int32, indices into ``tokens``;
    ``lengths``: (s,) int64 sentence lengths (sentence formats), else None.
    """

    tokens: list[str]
    counts: np.ndarray
    ids: np.ndarray
    lengths: np.ndarray | None = None


def block_tokens(fmt: str, block) -> tuple[Sequence[str], list[int] | None]:
    """The tokens of one block, and each sentence's length for sentence formats.

    ``block`` is text of whole lines with ``\\n`` line ends (``iter_line_blocks``)
    or, for ``csv``, a list of comments; the tokens are those ``prepare_corpus``
    makes of the same text.
    """
    if fmt == "tokens":
        tokens = block.replace("\n", f" {EOS} ").split()
        if not block.endswith("\n"):  # the file's last line, without its line end
            tokens.append(EOS)
        return tokens, None
    if fmt == "chars":
        return block, None
    if fmt == "text":
        sentences = [line_sentence(line) for line in map(str.strip, block.split("\n")) if line]
    else:
        sentences = [s for comment in block for s in raw_comment_sentences(comment)
                     if len(s) > MIN_TOKENS_EXCLUSIVE]
    return list(itertools.chain.from_iterable(sentences)), [len(s) for s in sentences]


def count_block(fmt: str, block) -> CountedBlock:
    """Count and encode one block (see ``block_tokens``); runs in worker processes."""
    if fmt == "chars":
        return _count_chars(block)
    tokens, lengths = block_tokens(fmt, block)
    # One pass through a dict (17% quicker than counting, then looking up): each token
    # becomes the position where it first appears, and those positions are then
    # numbered 0, 1, 2, ... in order.
    first_seen: dict[str, int] = {}
    first = np.fromiter(map(first_seen.setdefault, tokens, itertools.count()), dtype=np.intp, count=len(tokens))
    is_first = np.zeros(len(tokens), dtype=bool)
    is_first[first] = True
    ids = (np.cumsum(is_first, dtype=np.int32) - 1)[first]
    counts = np.bincount(ids, minlength=len(first_seen)).astype(np.int64, copy=False)
    return CountedBlock(list(first_seen), counts, ids, None if lengths is None else np.array(lengths, dtype=np.int64))


def _count_chars(text: str) -> CountedBlock:
    """``count_block`` for characters, with numpy over the code points (13x a ``Counter``)."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.intp)
    counts = np.bincount(codes)
    first = np.full(counts.shape[0], codes.shape[0], dtype=np.intp)  # each code point's first position
    np.minimum.at(first, codes, np.arange(codes.shape[0]))
    present = np.flatnonzero(counts)
    in_order = present[np.argsort(first[present])]
    local = np.zeros(counts.shape[0], dtype=np.int32)
    local[in_order] = np.arange(in_order.shape[0], dtype=np.int32)
    return CountedBlock([chr(c) for c in in_order.tolist()], counts[in_order], local[codes])


def _comment_blocks(comments: Iterable[str], block_chars: int) -> Iterator[list[str]]:
    block, size = [], 0
    for comment in comments:
        block.append(comment)
        size += len(comment)
        if size >= block_chars:
            yield block
            block, size = [], 0
    if block:
        yield block


def read_blocks(path, fmt: str, block_bytes: int, hasher=None) -> Iterator:
    """The blocks ``count_block`` takes: whole lines of text, or lists of comments for ``csv``
    (about ``block_bytes`` each)."""
    if fmt == "csv":
        return _comment_blocks(read_reddit_csv(path, hasher=hasher), block_bytes)
    return iter_line_blocks(path, block_bytes, hasher=hasher)


def counted_blocks(fmt: str, blocks: Iterable, workers: int = 1) -> Iterator[CountedBlock]:
    """``count_block`` of each block, in order; over ``workers`` processes when more than one.

    At most two blocks per worker are in flight, so memory stays bounded.
    """
    if workers <= 1:
        yield from (count_block(fmt, block) for block in blocks)
        return
    with _worker_pool(workers) as pool:
        pending: deque = deque()
        for block in blocks:
            pending.append(pool.apply_async(count_block, (fmt, block)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def default_workers(size: int, fmt: str) -> int:
    """Processes to prepare a file of ``size`` bytes with: one below ``PARALLEL_BYTES[fmt]``;
    above it, one more per core left idle by the 1-minute load average, up to the cores
    this process may use and ``MAX_WORKERS``.

    Measured on 2 shared cores (WikiText, 100 MB and 1 GB): two processes were no
    faster than one at a load of 1.3 to 1.8, and 8% to 60% slower at 2.5 to 6;
    they pay only with a core to spare.
    """
    if size < PARALLEL_BYTES.get(fmt, float("inf")):
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    idle = cores - (os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0)
    return max(1, min(MAX_WORKERS, cores, 1 + int(idle)))


def _worker_pool(workers: int):
    """A pool of forked processes. Forked, not spawned: a spawned worker would run
    the caller's script again (a script without ``if __name__ == "__main__"``
    would prepare, or train, in every worker). The workers only count strings,
    so the threads a fork leaves behind (BLAS's) do not concern them."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*multi-threaded, use of fork", category=DeprecationWarning)
        return multiprocessing.get_context("fork").Pool(workers)


class FirstAppearance:
    """Every token seen so far, numbered in order of first appearance, with its count.

    Those numbers are the provisional ids written before the vocabulary is known.
    """

    def __init__(self):
        self.ids: dict[str, int] = {}
        self.counts = np.zeros(1 << 10, dtype=np.int64)

    def table(self, block: CountedBlock) -> np.ndarray:
        """(D,) int32: the provisional id of each of ``block.tokens``; adds the block's counts."""
        ids = self.ids
        new = [t for t in block.tokens if t not in ids]
        ids.update(zip(new, range(len(ids), len(ids) + len(new))))
        table = np.fromiter(map(ids.__getitem__, block.tokens), dtype=np.int32, count=len(block.tokens))
        if len(ids) > self.counts.shape[0]:
            self.counts = np.concatenate([self.counts, np.zeros(len(ids), dtype=np.int64)])
        self.counts[table] += block.counts
        return table

    def counts_by_token(self) -> dict[str, int]:
        """token -> count, in order of first appearance (what ``Vocab.build`` counts from)."""
        return dict(zip(self.ids, self.counts[: len(self.ids)].tolist()))


def vocab_table(vocab: Vocab, tokens: Iterable[str], count: int) -> np.ndarray:
    """(count,) int32: the id of each token in ``vocab`` (``unk_id`` for the unknown)."""
    return np.fromiter(map(vocab.token_to_id.get, tokens, itertools.repeat(vocab.unk_id)),
                       dtype=np.int32, count=count)


def _npy_header(dtype: np.dtype, length: int) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (length,)})
    return buffer.getvalue()


class ArrayFile:
    """A 1-D ``.npy`` file written in blocks: a header for length 0, the data, then the
    header for the real length (numpy pads headers so the length fits in place)."""

    def __init__(self, path: Path, dtype: np.dtype):
        self.path, self.dtype, self.length = path, np.dtype(dtype), 0
        self.file = open(path, "wb")
        self.data_offset = self.file.write(_npy_header(self.dtype, 0))

    def append(self, values: np.ndarray) -> None:
        values = np.ascontiguousarray(values, dtype=self.dtype)
        self.file.write(memoryview(values).cast("B"))
        self.length += values.shape[0]

    def close(self) -> None:
        header = _npy_header(self.dtype, self.length)
        if len(header) != self.data_offset:
            raise DataError(f"{self.path}: .npy header for {self.length} entries does not fit in place")
        self.file.seek(0)
        self.file.write(header)
        self.file.close()


def remap_ids(path: Path, data_offset: int, length: int, table: np.ndarray, block: int = 1 << 20) -> None:
    """Replace every id ``i`` in the int32 file ``path`` by ``table[i]``, in place, a block at a time."""
    buffer = np.empty(block, dtype=IDS_DTYPE)
    table = table.astype(IDS_DTYPE, copy=False)
    with open(path, "r+b") as f:
        for start in range(0, length, block):
            part = buffer[: min(block, length - start)]
            position = data_offset + start * IDS_DTYPE.itemsize
            f.seek(position)
            f.readinto(memoryview(part).cast("B"))
            f.seek(position)
            f.write(memoryview(table[part]).cast("B"))


def write_prepared(path: str | os.PathLike, fmt: str, folder: str | os.PathLike, vocab_size: int | None = None, *,
                   vocab: Vocab | None = None, unk: str | None = None, workers: int | None = None,
                   hasher=None, manifest: Callable[[], dict] | None = None, block_bytes: int | None = None) -> Path:
    """``save_prepared(prepare_corpus(path, fmt, vocab_size, vocab=vocab, unk=unk), folder)``,
    streamed: the same files, written a block at a time.

    ``workers`` > 1 counts and encodes blocks (of about ``block_bytes``,
    default ``FORMAT_BLOCK_BYTES`` or ``WORKER_BLOCK_BYTES``) in that many
    processes (default ``default_workers``).
    ``hasher`` sees every byte of ``path`` (``readers.iter_text``); once the
    file is read, ``manifest()`` gives entries added to ``corpus.json``,
    which is written last. Returns the folder.
    """
    if fmt not in FORMATS:
        raise DataError(f"unknown corpus format {fmt!r}; expected one of {', '.join(FORMATS)}")
    unk = DEFAULT_UNK[fmt] if unk is None else unk
    if workers is None:
        workers = default_workers(_size_or_zero(path), fmt)
    if block_bytes is None:
        block_bytes = (WORKER_BLOCK_BYTES if workers > 1 else FORMAT_BLOCK_BYTES)[fmt]
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{folder}: cannot create folder ({e.strerror or e})") from None
    for name in (META_FILE, OFFSETS_FILE):
        (folder / name).unlink(missing_ok=True)
    ids_file = ArrayFile(folder / IDS_FILE, IDS_DTYPE)
    offsets_file = ArrayFile(folder / OFFSETS_FILE, OFFSETS_DTYPE) if fmt in SENTENCE_FORMATS else None
    try:
        seen = FirstAppearance()
        if offsets_file is not None:
            offsets_file.append(np.zeros(1, dtype=np.int64))
        for block in counted_blocks(fmt, read_blocks(path, fmt, block_bytes, hasher), workers):
            table = seen.table(block) if vocab is None else vocab_table(vocab, block.tokens, len(block.tokens))
            if offsets_file is not None:
                offsets_file.append(ids_file.length + np.cumsum(block.lengths))
            ids_file.append(table[block.ids])
    finally:
        ids_file.close()
        if offsets_file is not None:
            offsets_file.close()
    extra = manifest() if manifest is not None else {}
    num_sentences = None if offsets_file is None else offsets_file.length - 1
    _check_not_empty(path, fmt, ids_file.length, num_sentences)
    if vocab is None:
        vocab = Vocab.build(seen.counts_by_token(), vocab_size, unk=unk)
        remap_ids(ids_file.path, ids_file.data_offset, ids_file.length, vocab_table(vocab, seen.ids, len(seen.ids)))
    for array_file in (ids_file, offsets_file):
        if array_file is not None:
            _fsync_file(array_file.path)
    vocab.save(folder / VOCAB_FILE)
    _write_meta(folder, _corpus_meta(ids_file.length, num_sentences, len(vocab)) | extra)
    return folder


def _size_or_zero(path) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0  # the reader names the problem


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _check_not_empty(path, fmt: str, num_tokens: int, num_sentences: int | None) -> None:
    """The errors ``prepare_corpus`` raises for an empty corpus."""
    if num_sentences == 0:
        raise DataError(f"{path}: no sentences in the corpus")
    if num_tokens == 0:
        what = "characters" if fmt == "chars" else "tokens"
        raise DataError(f"{path}: no {what} in the corpus")


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
    _write_meta(folder, _corpus_meta(corpus.num_tokens, corpus.num_sentences, len(corpus.vocab)))
    return folder


def _corpus_meta(num_tokens: int, num_sentences: int | None, vocab_size: int) -> dict:
    return {"format": CORPUS_FORMAT, "version": CORPUS_VERSION,
            "kind": "stream" if num_sentences is None else "sentences",
            "num_tokens": num_tokens, "num_sentences": num_sentences, "vocab_size": vocab_size}


def _write_meta(folder: Path, meta: dict) -> None:
    with atomic_write(folder / META_FILE, "w") as f:
        json.dump(meta, f)
        f.write("\n")


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


def id_bounds(ids: np.ndarray, block: int = 1 << 20) -> tuple[int, int]:
    """(smallest, largest) id. A memory map is read through its file a block at a
    time, so checking a large corpus does not leave all of it mapped in memory."""
    if not isinstance(ids, np.memmap) or ids.filename is None:
        return int(ids.min()), int(ids.max())
    buffer = np.empty(block, dtype=ids.dtype)
    low, high = None, None
    with open(ids.filename, "rb") as f:
        f.seek(ids.offset)
        for start in range(0, ids.shape[0], block):
            part = buffer[: min(block, ids.shape[0] - start)]
            if f.readinto(memoryview(part).cast("B")) != part.nbytes:
                raise DataError(f"{ids.filename}: shorter than its header says")
            low = int(part.min()) if low is None else min(low, int(part.min()))
            high = int(part.max()) if high is None else max(high, int(part.max()))
    return low, high


def read_meta(folder: str | os.PathLike) -> dict:
    """A prepared folder's ``corpus.json``; ``DataError`` if it is missing, unreadable or not ours."""
    meta_path = Path(folder) / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{folder}: not a prepared corpus (no {META_FILE})") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{meta_path}: unreadable ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != CORPUS_FORMAT:
        raise DataError(f"{meta_path}: not an rnnlab prepared corpus")
    return meta


def load_prepared(folder: str | os.PathLike, mmap: bool = True, *, validate: bool = True) -> Corpus:
    """Read a folder written by ``save_prepared``.

    With ``mmap`` the id arrays are read-only memory maps (``np.load(...,
    mmap_mode="r", allow_pickle=False)``): pages are read as training touches
    them. ``validate`` checks that every id is inside the vocabulary (one pass
    over the file) and that the offsets are consistent.
    """
    folder = Path(folder)
    meta_path = folder / META_FILE
    meta = read_meta(folder)
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
        low, high = id_bounds(ids)
        if low < 0 or high >= len(vocab):
            raise DataError(f"{folder / IDS_FILE}: token id {high if high >= len(vocab) else low} "
                            f"is outside the vocabulary of {len(vocab)}")
    return Corpus(vocab=vocab, ids=ids, kind=kind, offsets=offsets)
