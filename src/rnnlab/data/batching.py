"""Batches of token ids, time-major: every batch array is (T, B).

Stream mode (one long sequence, hidden state carried across chunks by the
caller), as PyTorch's word_language_model ``batchify`` / ``get_batch``::

    ids = a b c d e f g h i j k l m n o p q r s t u v w x y z     (N = 26)

    batchify(ids, 4)  ->  N // B = 6 rows, B = 4 columns (y, z dropped)
        ┌ a g m s ┐
        │ b h n t │     column j is the contiguous stretch
        │ c i o u │     ids[j*6 : (j+1)*6]: B parallel streams
        │ d j p v │     read top to bottom
        │ e k q w │
        └ f l r x ┘

    stream_chunks(batched, bptt=2)
        inputs rows 0-1 (a g m s / b h n t), targets rows 1-2 (b h n t / c i o u)
        inputs rows 2-3,                     targets rows 3-4
        inputs row  4 (T = 1, shorter),      targets row  5

Sentence mode (one sentence per column, hidden state reset per batch)::

    sentences  s1 = [S a b E], s2 = [S c E], s3 = [S d e f E]     (S, E: markers)

    sentence_batches(..., batch_size=2), lengths sorted: s2, s1 | s3
        inputs (T=3)      targets           mask
        ┌ S   S ┐         ┌ c  a ┐          ┌ 1 1 ┐
        │ c   a │         │ E  b │          │ 1 1 │
        └ pad b ┘         └ pad E┘          └ 0 1 ┘
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from ..errors import DataError


def batchify(ids: np.ndarray, batch_size: int) -> np.ndarray:
    """(N,) ids -> (N // B, B): column ``j`` is ``ids[j*n:(j+1)*n]`` with n = N // B.

    The tail of ``N % B`` ids is dropped. The result is a view of ``ids`` where
    numpy allows one (so a memory-mapped corpus is not read into memory);
    ``np.ascontiguousarray`` it if you need contiguous memory.
    """
    ids = np.asarray(ids) if not isinstance(ids, np.ndarray) else ids
    if ids.ndim != 1:
        raise ValueError(f"ids must be 1-D, not of shape {ids.shape}")
    if batch_size < 1:
        raise DataError(f"batch size must be at least 1, not {batch_size}")
    rows = ids.shape[0] // batch_size
    if rows < 2:
        raise DataError(f"a stream of {ids.shape[0]} tokens is too short for batch size {batch_size} "
                        f"(each column needs at least 2 tokens)")
    return ids[: rows * batch_size].reshape(batch_size, rows).T


def stream_chunks(batched: np.ndarray, bptt: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(inputs, targets)`` pairs of shape (T, B) over a ``batchify`` result.

    T = ``bptt``, except the last chunk may be shorter; targets are the inputs
    shifted one step down (``batched[i+1 : i+1+T]``). Every row but the last is
    an input once. The arrays are fresh contiguous copies.
    """
    if bptt < 1:
        raise DataError(f"bptt must be at least 1, not {bptt}")
    n = batched.shape[0]
    for i in range(0, n - 1, bptt):
        t = min(bptt, n - 1 - i)
        yield np.ascontiguousarray(batched[i:i + t]), np.ascontiguousarray(batched[i + 1:i + 1 + t])


def num_stream_chunks(batched: np.ndarray, bptt: int) -> int:
    """How many chunks ``stream_chunks(batched, bptt)`` yields."""
    return max(0, -(-(batched.shape[0] - 1) // bptt))


def _sentence_groups(lengths: np.ndarray, batch_size: int, shuffle_rng) -> list[np.ndarray]:
    """Indices of the sentences of each batch, in the order the batches come."""
    order = np.arange(lengths.shape[0])
    if batch_size > 1:
        order = np.argsort(lengths, kind="stable")  # similar lengths together, ties in corpus order
    groups = [order[i:i + batch_size] for i in range(0, order.shape[0], batch_size)]
    if shuffle_rng is not None:
        groups = [groups[k] for k in shuffle_rng.permutation(len(groups))]
    return groups


def sentence_batches(sentences: Sequence[np.ndarray], batch_size: int, *,
                     shuffle_rng: np.random.Generator | None = None,
                     pad_id: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(inputs, targets, mask)``, each (T, B), over whole sentences.

    For a sentence ``s`` (markers included) the inputs are ``s[:-1]`` and the
    targets ``s[1:]``, in one column, padded at the end with ``pad_id``; T is
    the longest sentence of the batch minus one. ``mask`` (float32) is 1 on
    real targets and 0 on padding. Sentences are sorted by length (stably) and
    cut into batches of ``batch_size`` (the last may hold fewer columns); with
    ``shuffle_rng`` the order of the batches is shuffled.

    With ``batch_size == 1`` nothing is sorted: the sentences come one at a
    time in corpus order (or in ``shuffle_rng``'s permutation), the tutorial's
    one-sentence-per-step SGD. Sentences of fewer than 2 tokens have no
    target and are skipped.
    """
    if batch_size < 1:
        raise DataError(f"batch size must be at least 1, not {batch_size}")
    lengths = np.fromiter((len(s) for s in sentences), dtype=np.int64, count=len(sentences))
    usable = np.flatnonzero(lengths >= 2)
    if usable.shape[0] != lengths.shape[0]:
        lengths_used = lengths[usable]
    else:
        lengths_used = lengths
    for group in _sentence_groups(lengths_used, batch_size, shuffle_rng):
        members = usable[group]
        steps = int(lengths[members].max()) - 1
        dtype = np.result_type(*(np.asarray(sentences[k]).dtype for k in members), np.int32)
        inputs = np.full((steps, members.shape[0]), pad_id, dtype=dtype)
        targets = np.full((steps, members.shape[0]), pad_id, dtype=dtype)
        mask = np.zeros((steps, members.shape[0]), dtype=np.float32)
        for col, k in enumerate(members.tolist()):
            s = np.asarray(sentences[k])
            t = s.shape[0] - 1
            inputs[:t, col] = s[:-1]
            targets[:t, col] = s[1:]
            mask[:t, col] = 1.0
        yield inputs, targets, mask
