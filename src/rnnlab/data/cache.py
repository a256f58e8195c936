"""Corpora prepared once: where a corpus came from, and a cache of prepared folders.

``open_corpus(path, fmt, vocab_size)`` returns the corpus of a file with its
ids memory-mapped from a prepared folder (``prepare.write_prepared``),
preparing the file only when no folder made from the same bytes with the
same settings is cached. A prepared folder records its source and settings
in ``corpus.json`` (old folders without them still load)::

    "source":      {"path", "size", "sha256", "mtime_ns", "ctime_ns", "inode", "hashed_ns"}
    "preparation": {"fmt", "vocab_size" (requested), "unk", "vocab_sha256" (a given vocabulary's)}

The cache (``corpus_cache_dir()``) holds one folder per source and settings::

    <cache>/<file name>.<fmt>.<key>/            key: 16 hex digits of the sha256 of the
        corpus.json ids.npy [offsets.npy]       absolute path and the "preparation" entries
        vocab.json
    <cache>/.<file name>.<fmt>.<key>.<pid>-<random>.tmp/   a preparation in progress, never read

An entry is current when its source has the file's size and either the same
inode, mtime and ctime, both older than the moment the entry's hash was taken
by more than ``STAT_SLACK_NS`` (a change in the same clock tick cannot hide),
or the same sha256 (then the recorded times are refreshed). The times are
trusted because hashing is not free: a cached start of a 1 GB corpus took
0.07 s, 0.72 s when it hashed the file too (``verify=True``); the ctime, which
``os.utime`` cannot set back, catches a copy that kept the old mtime. A folder is
prepared under a temporary name and renamed into place, so a half-written
entry is never read and two processes preparing the same entry each finish
with a whole one; an entry that fails to load is prepared again.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import stat as stat_module
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

from ..atomic import atomic_write, fsync_dir
from ..errors import DataError
from .prepare import (
    DEFAULT_UNK,
    FORMATS,
    IDS_FILE,
    META_FILE,
    OFFSETS_FILE,
    SENTENCE_FORMATS,
    VOCAB_FILE,
    Corpus,
    load_prepared,
    read_meta,
    write_prepared,
)
from .readers import open_binary
from .vocab import Vocab

CACHE_ENV = "RNNLAB_CACHE_DIR"
PREPARATION_VERSION = 1  # part of every cache key: bump it when the tokens of a format change
STAT_SLACK_NS = 2_000_000_000  # coarser than any file system's timestamps (FAT: 2 s)


class CorruptCacheEntryWarning(UserWarning):
    """A cached preparation could not be loaded; the corpus is prepared again."""


def corpus_cache_dir() -> Path:
    """``$RNNLAB_CACHE_DIR``, else ``$XDG_CACHE_HOME/rnnlab/corpora``, else ``~/.cache/rnnlab/corpora``."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "rnnlab" / "corpora"


# -- where a corpus came from ----------------------------------------------------------


@dataclass(frozen=True)
class SourceRecord:
    """A corpus file: its absolute ``path``, ``size`` in bytes and the ``sha256`` of its bytes."""

    path: str
    size: int
    sha256: str

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object, where: str = "source record") -> "SourceRecord":
        if not (isinstance(data, dict) and isinstance(data.get("path"), str) and isinstance(data.get("sha256"), str)
                and isinstance(data.get("size"), int) and not isinstance(data.get("size"), bool)):
            raise DataError(f"{where}: a source record needs a path, a size and a sha256")
        return cls(data["path"], data["size"], data["sha256"])


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, streamed (about 0.6 s per GB from the page cache).

    sha256 rather than blake2b: with the CPU's SHA instructions it ran at
    1.8 GB/s here against blake2b's 0.9 GB/s.
    """
    path = Path(path)
    with open_binary(path) as f:
        try:
            return hashlib.file_digest(f, "sha256").hexdigest()
        except OSError as e:
            raise DataError(f"{path}: cannot read ({e.strerror or e})") from None


def vocab_sha256(vocab: Vocab) -> str:
    """Hex sha256 of the vocabulary's JSON (tokens, counts, unknown token, specials)."""
    return hashlib.sha256(vocab.to_json().encode("utf-8")).hexdigest()


def source_record(path: str | os.PathLike) -> SourceRecord:
    """The record of the corpus file ``path`` as it is now (reads the whole file)."""
    path = Path(path).resolve()
    digest = file_sha256(path)
    return SourceRecord(str(path), _stat(path).st_size, digest)


def check_same_source(saved: SourceRecord, current: SourceRecord) -> None:
    """Raise ``DataError`` unless ``current`` holds the same bytes as ``saved`` (the path may differ)."""
    if (saved.size, saved.sha256) != (current.size, current.sha256):
        raise DataError(f"{current.path}: not the corpus recorded ({saved.path}, {saved.size} bytes, "
                        f"sha256 {saved.sha256[:12]}...): it has {current.size} bytes, sha256 {current.sha256[:12]}...")


def _stat(path: Path) -> os.stat_result:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if stat_module.S_ISDIR(stat.st_mode):
        raise DataError(f"{path}: is a folder, not a corpus file")
    if not stat_module.S_ISREG(stat.st_mode):
        raise DataError(f"{path}: not a regular file")
    return stat


def _stat_key(stat: os.stat_result) -> tuple[int, int, int, int]:
    return stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino


# -- the manifest ----------------------------------------------------------------------


@dataclass(frozen=True)
class Preparation:
    """The settings a folder was prepared with: the format, the requested vocabulary
    size (None: every token), the unknown token, and the sha256 of the vocabulary
    the ids were encoded with when one was given (a validation file's)."""

    fmt: str
    vocab_size: int | None
    unk: str
    vocab_sha256: str | None = None

    @classmethod
    def of(cls, fmt: str, vocab_size: int | None, vocab: Vocab | None, unk: str | None) -> "Preparation":
        """The settings ``prepare_corpus`` would use; a given vocabulary makes the size irrelevant."""
        if fmt not in FORMATS:
            raise DataError(f"unknown corpus format {fmt!r}; expected one of {', '.join(FORMATS)}")
        if vocab is not None:
            return cls(fmt, None, vocab.unk, vocab_sha256(vocab))
        return cls(fmt, vocab_size or None, DEFAULT_UNK[fmt] if unk is None else unk)


@dataclass(frozen=True)
class Manifest:
    """What ``corpus.json`` records about a prepared folder's source and settings.

    ``stat``: (size, mtime_ns, ctime_ns, inode) of the source when it was
    read; ``hashed_ns``: the wall-clock time its sha256 was taken.
    """

    source: SourceRecord
    stat: tuple[int, int, int, int]
    hashed_ns: int
    preparation: Preparation

    def to_meta(self) -> dict:
        _, mtime_ns, ctime_ns, inode = self.stat
        return {"source": {**self.source.to_dict(), "mtime_ns": mtime_ns, "ctime_ns": ctime_ns, "inode": inode,
                           "hashed_ns": self.hashed_ns},
                "preparation": asdict(self.preparation)}

    @classmethod
    def from_meta(cls, meta: dict, where: str) -> "Manifest | None":
        """The manifest in ``corpus.json``'s ``meta``; None for a folder prepared without one."""
        if "source" not in meta and "preparation" not in meta:
            return None
        try:
            source, preparation = meta["source"], meta["preparation"]
            stat = (source["size"], source["mtime_ns"], source["ctime_ns"], source["inode"])
            if not all(isinstance(x, int) for x in (*stat, source["hashed_ns"])):
                raise TypeError
            return cls(SourceRecord.from_dict(source, where), stat, source["hashed_ns"], Preparation(**preparation))
        except (KeyError, TypeError, DataError):
            raise DataError(f"{where}: malformed source and preparation records") from None


def read_manifest(folder: str | os.PathLike) -> Manifest | None:
    """The manifest of a prepared folder, or None when it has none (prepared before manifests)."""
    return Manifest.from_meta(read_meta(folder), str(Path(folder) / META_FILE))


def _refresh_manifest(folder: Path, manifest: Manifest) -> None:
    """Rewrite ``corpus.json`` with ``manifest`` (atomically; everything else kept)."""
    meta = read_meta(folder)
    with atomic_write(folder / META_FILE, "w") as f:
        json.dump(meta | manifest.to_meta(), f)
        f.write("\n")


# -- preparing -------------------------------------------------------------------------


def _prepare(source: Path, preparation: Preparation, vocab: Vocab | None, folder: Path,
             workers: int | None) -> Manifest:
    """Prepare ``source`` into ``folder`` with its manifest, hashing it in the same read."""
    before = _stat(source)
    hashed_ns = time.time_ns()
    hasher = hashlib.sha256()
    manifest = None

    def record() -> dict:
        nonlocal manifest
        if _stat_key(_stat(source)) != _stat_key(before):
            raise DataError(f"{source}: changed while it was being prepared")
        manifest = Manifest(SourceRecord(str(source), before.st_size, hasher.hexdigest()),
                            _stat_key(before), hashed_ns, preparation)
        return manifest.to_meta()

    write_prepared(source, preparation.fmt, folder, preparation.vocab_size, vocab=vocab, unk=preparation.unk,
                   workers=workers, hasher=hasher, manifest=record)
    return manifest


def _temp_name(dest: Path, suffix: str) -> Path:
    return dest.with_name(f".{dest.name}.{os.getpid()}-{os.urandom(4).hex()}.{suffix}")


def _replace_folder(new: Path, dest: Path, keep_existing=lambda: False) -> None:
    """Rename the folder ``new`` to ``dest``. An existing ``dest`` is replaced unless
    ``keep_existing()`` says it is as good (then ``new`` is left for the caller to remove)."""
    fsync_dir(new)
    try:
        os.rename(new, dest)  # onto nothing or an empty folder
    except OSError as e:
        if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise DataError(f"cannot move {new} to {dest} ({e.strerror or e})") from None
        if keep_existing():
            return
        old = _temp_name(dest, "old")
        try:
            os.rename(dest, old)
        except FileNotFoundError:
            pass
        try:
            os.rename(new, dest)
        except OSError:
            pass  # another process put its own in between: as good as ours
        shutil.rmtree(old, ignore_errors=True)
    fsync_dir(dest.parent)


_PREPARED_FILES = {IDS_FILE, OFFSETS_FILE, VOCAB_FILE, META_FILE}


def _check_replaceable(out: Path) -> None:
    """``out`` may be written: missing, an empty folder, or a prepared corpus and nothing else."""
    if not out.exists():
        return
    if not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; refusing to overwrite it")
    names = {p.name for p in out.iterdir()}
    if not names:
        return
    foreign = sorted(names - _PREPARED_FILES)
    if META_FILE not in names or foreign:
        shown = ", ".join(foreign[:3]) or "no corpus.json"
        raise DataError(f"{out}: not empty and not a prepared corpus ({shown}); refusing to overwrite it")
    read_manifest(out)  # raises unless corpus.json is ours


def prepare_folder(path: str | os.PathLike, fmt: str, vocab_size: int | None, out: str | os.PathLike,
                   vocab: Vocab | None = None, *, unk: str | None = None, workers: int | None = None) -> Path:
    """Prepare the corpus file ``path`` into the folder ``out``, with its manifest; returns ``out``.

    The same files ``save_prepared(prepare_corpus(path, fmt, vocab_size, vocab=vocab, unk=unk), out)``
    writes, streamed. ``out`` may be missing, empty or a prepared corpus (replaced whole, the
    new one written beside it first); anything else raises ``DataError``.
    """
    source, out = Path(path).resolve(), Path(out).resolve()
    preparation = Preparation.of(fmt, vocab_size, vocab, unk)
    _check_replaceable(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{out.parent}: cannot create folder ({e.strerror or e})") from None
    new = _temp_name(out, "tmp")
    try:
        _prepare(source, preparation, vocab, new, workers)
        _replace_folder(new, out)
    finally:
        shutil.rmtree(new, ignore_errors=True)
    return out


# -- opening ---------------------------------------------------------------------------


class OpenedCorpus(NamedTuple):
    """A corpus and the record of the file it was prepared from (None for a prepared
    folder without a manifest)."""

    corpus: Corpus
    source: SourceRecord | None


def _entry_name(source: Path, preparation: Preparation) -> str:
    key = json.dumps([PREPARATION_VERSION, str(source), asdict(preparation)], sort_keys=True)
    name = re.sub(r"[^A-Za-z0-9._+-]", "_", source.name).lstrip(".")[:64]
    return f"{name}.{preparation.fmt}.{hashlib.sha256(key.encode('utf-8')).hexdigest()[:16]}"


def _is_current(manifest: Manifest, source: Path, stat: os.stat_result, verify: bool) -> tuple[bool, Manifest]:
    """(whether the entry of ``manifest`` was prepared from the bytes ``source`` holds now,
    the manifest to keep: refreshed when a hash had to confirm it)."""
    if manifest.source.size != stat.st_size:
        return False, manifest
    settled = max(stat.st_mtime_ns, stat.st_ctime_ns) + STAT_SLACK_NS <= manifest.hashed_ns
    if not verify and settled and manifest.stat == _stat_key(stat):
        return True, manifest
    hashed_ns = time.time_ns()
    if file_sha256(source) != manifest.source.sha256:
        return False, manifest
    return True, Manifest(manifest.source, _stat_key(stat), hashed_ns, manifest.preparation)


def _open_entry(entry: Path, source: Path, preparation: Preparation, verify: bool) -> OpenedCorpus | None:
    """The cached corpus in ``entry`` if it is whole and current, else None."""
    if not (entry / META_FILE).is_file():
        return None
    stat = _stat(source)
    try:
        manifest = read_manifest(entry)
        if manifest is None or manifest.preparation != preparation or manifest.source.path != str(source):
            raise DataError(f"{entry / META_FILE}: records another source or settings")
        current, kept = _is_current(manifest, source, stat, verify)
        if not current:
            return None
        corpus = load_prepared(entry)
        if kept != manifest:
            _refresh_manifest(entry, kept)
    except (DataError, OSError, ValueError) as e:
        warnings.warn(f"{entry}: cached corpus unusable ({e}); preparing it again", CorruptCacheEntryWarning,
                      stacklevel=3)
        return None
    return OpenedCorpus(corpus, kept.source)


def _open_folder(folder: Path, fmt: str | None, vocab_size: int | None, vocab: Vocab | None) -> OpenedCorpus:
    """A prepared folder given as the corpus: loaded, its settings checked against those given."""
    corpus = load_prepared(folder)
    manifest = read_manifest(folder)
    if manifest is not None:
        done = manifest.preparation
        if fmt is not None and fmt != done.fmt:
            raise DataError(f"{folder}: prepared from format {done.fmt!r}, not {fmt!r}")
        if vocab is None and vocab_size and done.vocab_size != vocab_size:
            raise DataError(f"{folder}: prepared with a vocabulary of {done.vocab_size or 'every token'}, "
                            f"not {vocab_size}")
    elif fmt is not None and (fmt in SENTENCE_FORMATS) != (corpus.kind == "sentences"):
        raise DataError(f"{folder}: holds a {corpus.kind} corpus, not one of format {fmt!r}")
    if vocab is not None:
        if corpus.vocab != vocab:
            raise DataError(f"{folder}: prepared with another vocabulary than the one given")
        corpus.vocab = vocab
    return OpenedCorpus(corpus, None if manifest is None else manifest.source)


def open_corpus(path: str | os.PathLike, fmt: str | None = None, vocab_size: int | None = None, *,
                vocab: Vocab | None = None, unk: str | None = None, cache_dir: str | os.PathLike | None = None,
                verify: bool = False, workers: int | None = None) -> OpenedCorpus:
    """The corpus ``prepare_corpus(path, fmt, vocab_size, vocab=vocab, unk=unk)`` makes, with its
    ids memory-mapped, and the record of its source file.

    ``path`` is a corpus file or a prepared folder. A folder is loaded as it
    is; ``fmt``, ``vocab_size`` and ``vocab``, when given, must match what it
    was prepared with. A file is looked up in ``cache_dir`` (default
    ``corpus_cache_dir()``) and prepared there when no current entry exists
    (see the module docstring); ``verify`` compares the file's sha256 even
    when its size and times match. ``workers``: processes that prepare
    (default ``prepare.default_workers``).
    """
    path = Path(path).resolve()
    if path.is_dir():
        if not (path / META_FILE).is_file():
            raise DataError(f"{path}: is a folder, not a corpus file or a prepared corpus")
        return _open_folder(path, fmt, vocab_size, vocab)
    if fmt is None:
        raise DataError(f"{path}: the corpus format is needed to prepare a file ({', '.join(FORMATS)})")
    preparation = Preparation.of(fmt, vocab_size, vocab, unk)
    cache = Path(cache_dir) if cache_dir is not None else corpus_cache_dir()
    entry = cache / _entry_name(path, preparation)
    opened = _open_entry(entry, path, preparation, verify)
    if opened is None:
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DataError(f"cannot create the corpus cache {cache} ({e.strerror or e}); "
                            f"set {CACHE_ENV} to a writable folder") from None
        new = _temp_name(entry, "tmp")
        try:
            manifest = _prepare(path, preparation, vocab, new, workers)
            _replace_folder(new, entry, keep_existing=lambda: _holds(entry, manifest))
        finally:
            shutil.rmtree(new, ignore_errors=True)
        opened = OpenedCorpus(load_prepared(entry), manifest.source)
    if vocab is not None:
        opened.corpus.vocab = vocab  # equal: the entry's settings hold its sha256
    return opened


def _holds(entry: Path, manifest: Manifest) -> bool:
    """Whether ``entry`` (another process's, or one found corrupt) loads and was prepared
    from the same bytes with the same settings as ``manifest``."""
    try:
        theirs = read_manifest(entry)
        if theirs is None or (theirs.source, theirs.preparation) != (manifest.source, manifest.preparation):
            return False
        load_prepared(entry)
    except DataError:
        return False
    return True
