"""The array module, every array creation, and the reuse of large buffers, in one place.

The engine calls ``xp`` (numpy today) and the helpers below instead of
``np.zeros`` and friends, so that a CuPy backend can later replace this one
module without touching the gates. rnnlab's threads are in ``threads.py``.
"""
from __future__ import annotations

import os
import sys
import threading

import numpy as np

xp = np

DTYPES = {"float32": np.float32, "float64": np.float64}


def as_dtype(dtype) -> np.dtype:
    """Normalise ``"float32"`` / ``np.float64`` / ... to a numpy dtype."""
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, not {dtype!r}")
        return np.dtype(DTYPES[dtype])
    return np.dtype(dtype)


def zeros(shape, dtype=np.float32):
    return xp.zeros(shape, dtype=dtype)


def empty(shape, dtype=np.float32):
    return xp.empty(shape, dtype=dtype)


def as_ids(array):
    """Token ids as a compact integer array (int64 indexes fastest in numpy)."""
    ids = xp.asarray(array)
    if ids.dtype.kind not in "iu":
        raise ValueError(f"token ids must be integers, not {ids.dtype}")
    return ids.astype(np.intp, copy=False)


def rng(seed) -> np.random.Generator:
    """A fresh random generator (PCG64) for reproducible initialisation and sampling."""
    return np.random.default_rng(seed)


# Large temporaries (an (N, V) logits buffer, a (V, H) gradient) are made and
# freed at every step. By default glibc hands such blocks back to the kernel and
# the next step pays a page fault for every 4 KiB of them again: about as long
# as the matrix products of a small batch. Two remedies:
#
# * ``tune_allocator``: ask glibc to keep freed memory for reuse (blocks up to
#   32 MiB from the heap, and no trimming of it). Done once at import; set
#   RNNLAB_MALLOC_TUNE=0 to leave the allocator alone.
# * ``take``: a tiny pool for the largest internal buffer, the logits, reused
#   once nothing refers to it any more.

def tune_allocator() -> bool:
    """mallopt(M_MMAP_THRESHOLD, 32 MiB) and mallopt(M_TRIM_THRESHOLD, 1 GiB) on glibc."""
    if os.environ.get("RNNLAB_MALLOC_TUNE", "1") == "0":
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 32 << 20) and libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):  # not glibc: nothing to tune
        return False


tune_allocator()

_POOL_SIZE = 2
_buffers: list = []
_pool_lock = threading.Lock()


def _refs_when_free():
    """sys.getrefcount of a pooled array that nothing else refers to, seen from ``take``'s loop."""
    probe = [np.empty(1)]
    for array in probe:
        return sys.getrefcount(array)


_FREE_REFS = _refs_when_free()


def take(shape, dtype):
    """An uninitialised array, reused from a small pool when one of this shape is free.

    A pooled array is free when nothing but the pool refers to it (no gate's
    saved state, no view), so a buffer is never handed out twice while in use.
    """
    dtype = np.dtype(dtype)
    shape = tuple(shape)
    with _pool_lock:
        for array in _buffers:
            if array.shape == shape and array.dtype == dtype and sys.getrefcount(array) <= _FREE_REFS:
                return array
        array = empty(shape, dtype=dtype)
        _buffers.append(array)
        del _buffers[:-_POOL_SIZE]
        return array
