"""Safe, atomic checkpoints of a training run in a directory.

A checkpoint directory holds

* ``model-<hash>.safetensors``: the parameters, float32 or float64;
* ``optimizer-<hash>.safetensors``: the optimiser's state arrays (absent
  when no optimiser state was saved);
* ``checkpoint.json``: format name and version, model config, vocabulary,
  optimiser meta, training state, and the name and sha256 of each tensor file.

Nothing is ever unpickled: tensors are read with safetensors, which only
parses a JSON header and raw bytes. Tensor files are named by a prefix of
their sha256, so a save writes new files next to the old ones, replaces
``checkpoint.json`` last (temp file, fsync, ``os.replace``, fsync of the
directory) and only then deletes the files the old JSON named. A save that
is interrupted at any point leaves the previous checkpoint loadable.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_write
from .errors import CheckpointError, RnnlabError

FORMAT = "rnnlab-checkpoint"
VERSION = 1
JSON_NAME = "checkpoint.json"
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# Our tensor files and our temp files; the only names a save ever deletes.
OWN_PATTERNS = ("model-*.safetensors", "optimizer-*.safetensors", ".model-*.tmp", ".optimizer-*.tmp",
                f".{JSON_NAME}.*.tmp")


@dataclass
class Checkpoint:
    """A loaded checkpoint; ``params`` and ``optimizer_arrays`` are writable arrays."""

    params: dict[str, np.ndarray]
    config: dict
    vocab: dict | None
    optimizer_arrays: dict[str, np.ndarray] | None
    optimizer_meta: dict | None
    state: dict


def _safetensors():
    try:
        import safetensors.numpy
    except ImportError:
        raise RnnlabError("checkpoints need safetensors: pip install 'rnnlab[cli]'") from None
    return safetensors.numpy


def _check_dtypes(tensors: dict[str, np.ndarray], what: str) -> None:
    for k, a in tensors.items():
        if a.dtype not in FLOAT_DTYPES:
            raise CheckpointError(f"{what} {k!r} has dtype {a.dtype}; only float32 and float64 are allowed")


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def save_checkpoint(directory, *, params: dict[str, np.ndarray], config: dict, vocab: dict | None,
                    optimizer: tuple[dict[str, np.ndarray], dict] | None, state: dict) -> Path:
    """Save a training run into ``directory`` (created if needed); return the JSON's path.

    ``params``: name -> float32/float64 array of any shape. ``optimizer``: the
    ``(arrays, meta)`` of ``Optimizer.state_dict()`` or None. ``config``,
    ``vocab`` and ``state`` must be JSON-able (numpy scalars are converted);
    ``state`` is the trainer's position and settings (``train.TrainState``).
    """
    st = _safetensors()
    directory = Path(directory)
    _check_dtypes(params, "parameter")
    blobs = {"model": st.save({k: np.asarray(a, order="C") for k, a in params.items()})}
    if optimizer is not None:
        _check_dtypes(optimizer[0], "optimizer array")
        blobs["optimizer"] = st.save({k: np.asarray(a, order="C") for k, a in optimizer[0].items()})
    files = {}
    for kind, blob in blobs.items():
        digest = hashlib.sha256(blob).hexdigest()
        files[kind] = {"name": f"{kind}-{digest[:16]}.safetensors", "sha256": digest}
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "config": config,
        "vocab": vocab,
        "optimizer": None if optimizer is None else optimizer[1],
        "state": state,
        "params": sorted(params),
        "files": files,
    }
    text = json.dumps(doc, indent=1, default=_json_default)  # before any write: a TypeError leaves no trace
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for kind, blob in blobs.items():  # each durable, name included, before the JSON names it
            with atomic_write(directory / files[kind]["name"]) as f:
                f.write(blob)
        with atomic_write(directory / JSON_NAME, "w") as f:
            f.write(text)
        keep = {f["name"] for f in files.values()}
        for pattern in OWN_PATTERNS:
            for old in directory.glob(pattern):
                if old.name not in keep:
                    old.unlink(missing_ok=True)
    except OSError as e:
        raise CheckpointError(f"cannot save checkpoint in {directory}: {e}") from e
    return directory / JSON_NAME


def _read_tensors(directory: Path, entry, what: str) -> dict[str, np.ndarray]:
    """Read, hash-check and parse one tensor file named by the JSON's ``files`` entry."""
    try:
        name, digest = entry["name"], entry["sha256"]
    except (TypeError, KeyError):
        raise CheckpointError(f"{directory / JSON_NAME}: bad entry for the {what} file") from None
    if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
        raise CheckpointError(f"{directory / JSON_NAME}: {what} file name {name!r} is not a plain file name")
    path = directory / name
    try:
        blob = path.read_bytes()
    except OSError:
        raise CheckpointError(f"incomplete or corrupt checkpoint: {path} is missing") from None
    if hashlib.sha256(blob).hexdigest() != digest:
        raise CheckpointError(f"incomplete or corrupt checkpoint: {path} does not match its sha256")
    try:
        tensors = _safetensors().load(blob)
    except Exception as e:  # safetensors raises its own SafetensorError on any malformed file
        raise CheckpointError(f"incomplete or corrupt checkpoint: {path}: {e}") from None
    _check_dtypes(tensors, f"{path.name}:")
    return tensors


def load_checkpoint(directory) -> Checkpoint:
    """Load and verify what ``save_checkpoint`` wrote; every problem is a one-line CheckpointError."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"no checkpoint directory {directory}")
    path = directory / JSON_NAME
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"no {JSON_NAME} in {directory}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not a readable JSON file: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an rnnlab checkpoint")
    version = doc.get("version")
    if not isinstance(version, int):
        raise CheckpointError(f"{path} has no valid format version")
    if version > VERSION:
        raise CheckpointError(f"{path} has format version {version}; this rnnlab reads up to {VERSION}")
    files = doc.get("files")
    if not isinstance(files, dict) or "model" not in files:
        raise CheckpointError(f"incomplete or corrupt checkpoint: {path} names no model file")
    params = _read_tensors(directory, files["model"], "model")
    names = doc.get("params")
    if not isinstance(names, list):
        raise CheckpointError(f"incomplete or corrupt checkpoint: {path} lists no parameters")
    for name in names:
        if name not in params:
            raise CheckpointError(f"incomplete or corrupt checkpoint: parameter {name!r} is missing")
    optimizer_arrays = None
    if "optimizer" in files:
        optimizer_arrays = _read_tensors(directory, files["optimizer"], "optimizer")
    return Checkpoint(params=params, config=doc.get("config", {}), vocab=doc.get("vocab"),
                      optimizer_arrays=optimizer_arrays, optimizer_meta=doc.get("optimizer"),
                      state=doc.get("state", {}))


def check_compatible(checkpoint: Checkpoint, expected_shapes: dict[str, tuple], vocab: dict | None) -> None:
    """Raise CheckpointError unless the checkpoint has exactly these parameter shapes and, when
    ``vocab`` is given, the same vocabulary (compared as JSON, as it was saved)."""
    for name, shape in expected_shapes.items():
        if name not in checkpoint.params:
            raise CheckpointError(f"checkpoint has no parameter {name!r} (model expects {tuple(shape)})")
        got = checkpoint.params[name].shape
        if got != tuple(shape):
            raise CheckpointError(
                f"parameter {name!r} has shape {got} in the checkpoint, model expects {tuple(shape)}"
            )
    extra = sorted(set(checkpoint.params) - set(expected_shapes))
    if extra:
        raise CheckpointError(f"checkpoint parameter {extra[0]!r} is not in the model")
    if vocab is not None:
        ours, theirs = json.loads(json.dumps(vocab, default=_json_default)), checkpoint.vocab
        if ours != theirs:
            theirs = theirs if isinstance(theirs, dict) else {}
            keys = [k for k in {**ours, **theirs} if ours.get(k) != theirs.get(k)]
            where = f" (first difference: {keys[0]!r})" if keys else ""
            raise CheckpointError(f"the checkpoint's vocabulary differs from the given one{where}")

