"""``Vocab``: the token <-> id mapping, in the tutorial's layout.

Layout of the ids (``max_size`` = V)::

    0 .. k-1        the ``specials``, in the order given (k = len(specials))
    k .. V-2        the V-1-k most frequent other tokens, most frequent first
    V-1             the unknown token, always the last id

With no specials this is exactly the tutorial's ``index_to_word``:
``[w for w, _ in FreqDist(...).most_common(V - 1)] + [unknown_token]``.
Ties in count are broken by first appearance in the corpus (the earlier
token gets the smaller id), which is what ``nltk.FreqDist.most_common`` and
``collections.Counter.most_common`` do; for a ``Counter`` or a mapping given
directly, "first appearance" is its iteration order.

When the unknown token itself occurs in the corpus (WikiText's ``<unk>``) it
is not duplicated: it still takes the last id, and its count is its own
occurrences plus those of every token mapped to it.
"""
from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..atomic import atomic_write
from .tokenize import UNKNOWN_TOKEN

FORMAT = "rnnlab-vocab"
VERSION = 1


class VocabularyCappedWarning(UserWarning):
    """The requested vocabulary is larger than the corpus's distinct tokens; all are kept."""


class Vocab:
    """A fixed vocabulary. ``id_to_token[i]`` is the token of id ``i``;
    ``counts[i]`` its corpus count; ``unk_id == len(self) - 1``."""

    def __init__(self, tokens: Iterable[str], counts: Iterable[int] | None = None, *,
                 unk: str = UNKNOWN_TOKEN, specials: Iterable[str] = ()):
        self.id_to_token: list[str] = list(tokens)
        self.counts: list[int] = [0] * len(self.id_to_token) if counts is None else [int(c) for c in counts]
        self.unk: str = unk
        self.specials: tuple[str, ...] = tuple(specials)
        self.token_to_id: dict[str, int] = {t: i for i, t in enumerate(self.id_to_token)}
        if len(self.token_to_id) != len(self.id_to_token):
            raise DataError("vocabulary lists a token twice")
        if len(self.counts) != len(self.id_to_token):
            raise DataError(f"vocabulary has {len(self.id_to_token)} tokens but {len(self.counts)} counts")
        if not self.id_to_token or self.id_to_token[-1] != unk:
            raise DataError(f"vocabulary must end with its unknown token {unk!r}")
        if any(c < 0 for c in self.counts):
            raise DataError("vocabulary has a negative count")
        if tuple(self.id_to_token[: len(self.specials)]) != self.specials:
            raise DataError("vocabulary specials must take the first ids")
        self.unk_id: int = len(self.id_to_token) - 1

    # -- building --------------------------------------------------------------

    @classmethod
    def build(cls, tokens: Iterable[str] | Mapping[str, int], max_size: int | None = None, *,
              unk: str = UNKNOWN_TOKEN, specials: Iterable[str] = ()) -> "Vocab":
        """Count ``tokens`` (an iterable of tokens, or a token -> count mapping)
        and keep the ``max_size - 1`` most frequent, then ``unk`` last.

        ``max_size`` counts every id (specials and unk included); ``None`` or 0
        keeps every distinct token. A ``max_size`` larger than the number of
        distinct tokens + 1 keeps them all with a ``VocabularyCappedWarning``
        (the tutorial's 8000 on a small sample), however much larger: one rule.
        """
        counter = Counter(tokens) if not isinstance(tokens, Mapping) else Counter(dict(tokens))
        specials = tuple(specials)
        if unk in specials:
            raise DataError(f"the unknown token {unk!r} cannot also be a special token")
        if len(set(specials)) != len(specials):
            raise DataError("a special token is listed twice")
        others = [(t, c) for t, c in counter.items() if t != unk and t not in specials]
        largest = len(specials) + len(others) + 1
        if not max_size:
            max_size = largest
        if max_size < 0:
            raise DataError(f"vocabulary size must be positive, not {max_size}")
        if max_size < len(specials) + 1:
            raise DataError(
                f"vocabulary of {max_size} requested but {len(specials)} special tokens "
                f"and the unknown token need {len(specials) + 1}"
            )
        if max_size > largest:
            warnings.warn(
                f"vocabulary of {max_size} requested but the corpus has only {len(counter)} distinct "
                f"tokens: using {largest} ids", VocabularyCappedWarning, stacklevel=2)
            max_size = largest
        # Stable sort: equal counts keep their first-appearance order.
        others.sort(key=lambda tc: -tc[1])
        kept = others[: max_size - 1 - len(specials)]
        dropped = sum(c for _, c in others[len(kept):])
        id_to_token = [*specials, *(t for t, _ in kept), unk]
        counts = [*(counter.get(s, 0) for s in specials), *(c for _, c in kept), counter.get(unk, 0) + dropped]
        return cls(id_to_token, counts, unk=unk, specials=specials)

    # -- lookups ---------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.id_to_token)

    def __contains__(self, token: object) -> bool:
        return token in self.token_to_id

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocab):
            return NotImplemented
        return (self.id_to_token, self.counts, self.unk, self.specials) == (
            other.id_to_token, other.counts, other.unk, other.specials)

    def __repr__(self) -> str:
        return f"Vocab(size={len(self)}, unk={self.unk!r})"

    def encode(self, tokens: Iterable[str]) -> np.ndarray:
        """Ids of ``tokens``, shape (len(tokens),), int32; unknown tokens -> ``unk_id``."""
        get, unk_id = self.token_to_id.get, self.unk_id
        ids = [get(t, unk_id) for t in tokens]
        return np.array(ids, dtype=np.int32)

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens of ``ids`` (any integer sequence or array)."""
        table = self.id_to_token
        out = []
        array = np.asarray(ids)
        if array.size and array.dtype.kind not in "iu":
            raise DataError(f"token ids must be integers, not {array.dtype}")
        for i in array.reshape(-1).tolist():
            if not 0 <= i < len(table):
                raise DataError(f"token id {i} is outside the vocabulary of {len(table)}")
            out.append(table[i])
        return out

    def least_frequent(self) -> tuple[str, int]:
        """(token, count) of the least frequent kept corpus token: the last id
        before ``unk`` that is not a special (the tutorial's ``vocab[-1]``)."""
        i = self.unk_id - 1
        if i < len(self.specials):
            raise DataError("the vocabulary keeps no corpus token besides the unknown token")
        return self.id_to_token[i], self.counts[i]

    # -- files -----------------------------------------------------------------

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "unk": self.unk, "specials": list(self.specials),
                "tokens": self.id_to_token, "counts": self.counts}

    @classmethod
    def from_dict(cls, data: object, source: str = "vocabulary") -> "Vocab":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise DataError(f"{source}: not an rnnlab vocabulary (no \"format\": {FORMAT!r})")
        if data.get("version") != VERSION:
            raise DataError(f"{source}: vocabulary format version {data.get('version')!r}, expected {VERSION}")
        tokens, counts = data.get("tokens"), data.get("counts")
        unk, specials = data.get("unk"), data.get("specials", [])
        if not (isinstance(tokens, list) and all(isinstance(t, str) for t in tokens)):
            raise DataError(f"{source}: \"tokens\" must be a list of strings")
        if not (isinstance(counts, list)
                and all(isinstance(c, int) and not isinstance(c, bool) for c in counts)):
            raise DataError(f"{source}: \"counts\" must be a list of integers")
        if not isinstance(unk, str):
            raise DataError(f"{source}: \"unk\" must be a string")
        if not (isinstance(specials, list) and all(isinstance(t, str) for t in specials)):
            raise DataError(f"{source}: \"specials\" must be a list of strings")
        try:
            return cls(tokens, counts, unk=unk, specials=specials)
        except DataError as e:
            raise DataError(f"{source}: {e}") from None

    def to_json(self) -> str:
        """The vocabulary as a JSON document (UTF-8 text, one line)."""
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "vocabulary") -> "Vocab":
        """Parse ``to_json`` output; anything malformed raises ``DataError``."""
        try:
            data = json.loads(text)
        except (ValueError, TypeError) as e:
            raise DataError(f"{source}: not valid JSON ({e})") from None
        return cls.from_dict(data, source)

    def save(self, path: str | os.PathLike) -> None:
        """Write ``to_json()`` to ``path`` atomically."""
        with atomic_write(path, "w") as f:
            f.write(self.to_json())
            f.write("\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Vocab":
        path = Path(path)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise DataError(f"{path}: no such vocabulary file") from None
        except OSError as e:
            raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: invalid UTF-8 at byte offset {e.start}") from None
        return cls.from_json(text, str(path))
