"""Streaming UTF-8 readers for the corpora rnnlab trains on.

Every reader decodes the file in chunks with a strict incremental UTF-8
decoder, so a corpus larger than memory streams, and a bad file fails with a
``DataError`` that names the file and what is wrong with it:

* a missing file or a folder: "no such file";
* a NUL byte: "looks binary" (text corpora never hold one), with its byte offset;
* invalid UTF-8: the byte offset of the first bad byte.

A UTF-8 byte-order mark at the start of a file is skipped. Line ends follow
Python's text files: ``\\n``, ``\\r\\n`` and ``\\r`` all end a line.

The readers that read the raw bytes take a ``hasher`` (``hashlib.sha256()``
or anything with ``update(bytes)``): it sees every byte of the file, the
byte-order mark included, so a corpus is hashed in the pass that reads it.
"""
from __future__ import annotations

import codecs
import csv
import os
import re
import warnings
from pathlib import Path
from typing import Iterator

from ..errors import DataError

CHUNK_BYTES = 1 << 16
BLOCK_BYTES = 1 << 20  # about this much text per block of ``iter_line_blocks``
EOS = "<eos>"
_BOM = codecs.BOM_UTF8
_LINE_END = re.compile(r"\r\n|\r|\n")


class TruncatedCorpusWarning(UserWarning):
    """A corpus file ends in the middle of a record; its complete records were read."""


def open_binary(path: Path):
    """``open(path, "rb")``, with a ``DataError`` naming the problem."""
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not a corpus file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot open ({e.strerror or e})") from None


def iter_text(path: str | os.PathLike, chunk_bytes: int = CHUNK_BYTES, *, hasher=None) -> Iterator[str]:
    """Decoded text of ``path`` in pieces of about ``chunk_bytes`` bytes each.

    Raises ``DataError`` for a missing file, a NUL byte ("looks binary") or
    invalid UTF-8 (naming the byte offset of the first bad byte). ``hasher``
    is updated with every byte read.
    """
    path = Path(path)
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    offset = 0  # bytes of the file handed to the decoder so far
    first = True
    with open_binary(path) as f:
        while True:
            try:
                raw = f.read(max(chunk_bytes, len(_BOM)) if first else chunk_bytes)  # a whole BOM first
            except OSError as e:
                raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
            final = not raw
            if hasher is not None:
                hasher.update(raw)
            if first:
                first = False
                if raw.startswith(_BOM):
                    raw = raw[len(_BOM):]
                    offset = len(_BOM)
            nul = raw.find(b"\0")
            if nul >= 0:
                raise DataError(f"{path}: looks binary (NUL byte at byte offset {offset + nul}), not UTF-8 text")
            pending = len(decoder.getstate()[0])  # bytes of a character split across chunks
            try:
                text = decoder.decode(raw, final)
            except UnicodeDecodeError as e:
                at = offset - pending + e.start
                raise DataError(f"{path}: invalid UTF-8 at byte offset {at} ({e.reason})") from None
            offset += len(raw)
            if text:
                yield text
            if final:
                return


def iter_raw_lines(path: str | os.PathLike, chunk_bytes: int = CHUNK_BYTES, *, hasher=None) -> Iterator[str]:
    """Lines of ``path`` with their original line ends kept (``newline=''`` semantics).

    Only ``\\n``, ``\\r\\n`` and ``\\r`` end a line (not ``\\u2028`` and the other
    characters ``str.splitlines`` knows), as in a file opened with ``newline=''``:
    the form the ``csv`` module expects. The last line may lack a line end.
    """
    parts: list[str] = []  # the unfinished line, in pieces (no quadratic joins)
    carry = ""  # a chunk's trailing "\r": it may be half of "\r\n"
    for chunk in iter_text(path, chunk_bytes, hasher=hasher):
        if carry:
            chunk, carry = carry + chunk, ""
        if chunk.endswith("\r"):
            chunk, carry = chunk[:-1], "\r"
        start = 0
        for match in _LINE_END.finditer(chunk):
            end = match.end()
            if parts:
                parts.append(chunk[start:end])
                yield "".join(parts)
                parts = []
            else:
                yield chunk[start:end]
            start = end
        if start < len(chunk):
            parts.append(chunk[start:])
    if carry:
        parts.append(carry)
    if parts:
        yield "".join(parts)


def _strip_line_end(line: str) -> str:
    if line.endswith("\r\n"):
        return line[:-2]
    if line.endswith(("\n", "\r")):
        return line[:-1]
    return line


def read_lines(path: str | os.PathLike) -> Iterator[str]:
    """Non-blank lines of a plain-text file (one sentence or paragraph per line).

    Each line comes without its line end and with surrounding whitespace
    stripped; lines that are empty or all whitespace are skipped.
    """
    for line in iter_raw_lines(path):
        line = line.strip()
        if line:
            yield line


def read_tokens(path: str | os.PathLike, eos: str = EOS) -> Iterator[list[str]]:
    """Whitespace tokens of each line plus ``eos``, as PyTorch's word_language_model.

    Exactly ``line.split() + ['<eos>']`` for every line of a file opened in text
    mode, so an empty line gives ``['<eos>']`` and ``<unk>`` stays a token.
    """
    for line in iter_raw_lines(path):
        yield _strip_line_end(line).split() + [eos]


def read_chars(path: str | os.PathLike) -> str:
    """The whole text of ``path`` as one string; line ends become ``\\n``.

    (Python's default text-mode reading, as char-rnn style loaders do with
    ``open(path).read()``.)
    """
    return _unix_line_ends("".join(iter_text(path)))


def iter_line_blocks(path: str | os.PathLike, block_bytes: int = BLOCK_BYTES, *, hasher=None) -> Iterator[str]:
    """Text of ``path`` in blocks of whole lines, about ``block_bytes`` each, every line end made ``\\n``.

    Every block but the last ends with ``\\n``; the last may end inside its
    line. Joined, the blocks are ``read_chars(path)``; split at ``\\n``, the
    lines of ``iter_raw_lines``. A line longer than a block stays whole.
    """
    parts: list[str] = []  # text after the last line end so far
    for chunk in iter_text(path, block_bytes, hasher=hasher):
        # A final "\r" may be the first half of "\r\n": it waits for the next chunk.
        cut = max(chunk.rfind("\n"), chunk.rfind("\r", 0, len(chunk) - 1))
        if cut < 0:
            parts.append(chunk)
            continue
        parts.append(chunk[: cut + 1])
        yield _unix_line_ends("".join(parts))
        parts = [chunk[cut + 1:]]
    rest = "".join(parts)
    if rest:
        yield _unix_line_ends(rest)


def _unix_line_ends(text: str) -> str:
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def read_reddit_csv(path: str | os.PathLike, column: str = "body", *, hasher=None) -> Iterator[str]:
    """The ``body`` column of a CSV file with a header row, one comment at a time.

    Parsed by the ``csv`` module as the tutorial does (``skipinitialspace=True``),
    so quoted multi-line fields and ``""`` escapes come out as the text they
    stand for. Empty rows are skipped. A file cut inside a quoted field at its
    end (the Reddit sample is) yields its complete records, drops the cut one
    and warns with ``TruncatedCorpusWarning``.

    Raises ``DataError`` when there is no header row, no ``body`` column
    (naming the columns found), or a malformed record (naming its line).
    """
    path = Path(path)
    exhausted = False

    def lines() -> Iterator[str]:
        nonlocal exhausted
        yield from iter_raw_lines(path, hasher=hasher)
        exhausted = True

    reader = csv.reader(lines(), skipinitialspace=True)
    try:
        header = next(reader, None)
        while header is not None and not header:  # blank lines before the header
            header = next(reader, None)
        if header is None:
            raise DataError(f"{path}: empty CSV file, no header row")
        if exhausted:
            raise DataError(f"{path}: CSV file cut inside its header row")
        names = [name.strip() for name in header]
        if column not in names:
            raise DataError(f"{path}: no {column!r} column; columns found: {', '.join(map(repr, names))}")
        index = names.index(column)
        count = 0
        for row in reader:
            if exhausted:
                # The reader returned a record only after running out of lines: the
                # file ended inside a quoted field (a record ending at a line end is
                # returned before the reader asks for the next line).
                warnings.warn(
                    f"{path}: read {count} complete records; the last record was cut "
                    f"(unterminated quoted field at end of file) and was dropped",
                    TruncatedCorpusWarning,
                    stacklevel=2,
                )
                return
            if not row:
                continue
            if index >= len(row):
                raise DataError(
                    f"{path}: record on line {reader.line_num} has {len(row)} fields, "
                    f"the header has {len(names)}"
                )
            count += 1
            yield row[index]
    except csv.Error as e:
        raise DataError(f"{path}: malformed CSV near line {reader.line_num} ({e})") from None
