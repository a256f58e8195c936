"""Named corpora: where to find them, and downloading the one that may be fetched.

``find_corpus(name)`` looks, in order, for

1. ``$RNNLAB_DATA_DIR/<filename>``;
2. ``<cache>/<filename>``, with ``<cache>`` = ``$XDG_CACHE_HOME/rnnlab`` or
   ``~/.cache/rnnlab``;
3. a download from the corpus's canonical address (``url=`` overrides it),
   checked against its SHA-256 and written atomically into the cache. A
   checksum mismatch keeps no file; no network gives a ``DataError`` that says
   where to put the file instead.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import DataError
from ..atomic import atomic_write

#: name -> (filename, canonical URL or None for local-only corpora, sha256 of the file)
CORPORA: dict[str, tuple[str, str | None, str]] = {
    "tinyshakespeare": (
        "tinyshakespeare.txt",
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
    ),
    "reddit-sample": (
        "reddit-comments-2015-08-sample.csv",
        None,
        "fb6df088415f15c49a188fab4b4ebd3ea6ae3699cfb549049bde6524a2263fbb",
    ),
    "wikitext-2-valid": (
        "wikitext-2-valid.txt",
        None,
        "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
    ),
}

DEFAULT_TIMEOUT_S = 30.0
_CHUNK = 1 << 16


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/rnnlab``, or ``~/.cache/rnnlab`` when that is unset or empty."""
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "rnnlab"


def data_dir() -> Path | None:
    """``$RNNLAB_DATA_DIR`` as a path, or None when unset or empty; ``DataError`` when it names no
    folder (a mistyped path should not quietly turn into a download)."""
    value = os.environ.get("RNNLAB_DATA_DIR")
    if not value:
        return None
    if not Path(value).is_dir():
        raise DataError(f"RNNLAB_DATA_DIR is {value}, which is not a folder; point it to the folder that "
                        f"holds the corpora, or unset it")
    return Path(value)


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _how_to_provide(filename: str) -> str:
    return (f"set RNNLAB_DATA_DIR to a folder holding {filename} "
            f"or place the file at {cache_dir() / filename}")


def download(url: str, dest: str | os.PathLike, sha256: str, *, name: str | None = None,
             timeout: float = DEFAULT_TIMEOUT_S) -> Path:
    """Fetch ``url`` into ``dest`` atomically if its SHA-256 is ``sha256``.

    On a mismatch or a network error ``dest`` is left as it was (no partial
    or wrong file) and ``DataError`` is raised.
    """
    dest = Path(dest)
    label = name or dest.name
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the cache folder {dest.parent} ({e.strerror or e})") from None

    def offline(reason) -> DataError:
        return DataError(f"cannot download {label} from {url} ({reason}); {_how_to_provide(dest.name)}")

    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as e:
        raise offline(f"HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise offline(e.reason) from None
    except (OSError, ValueError, http.client.HTTPException) as e:
        raise offline(e) from None
    digest = hashlib.sha256()
    with response:
        try:
            with atomic_write(dest, "wb") as f:
                while True:
                    try:
                        block = response.read(_CHUNK)
                    except (OSError, http.client.HTTPException) as e:
                        raise offline(e) from None
                    if not block:
                        break
                    digest.update(block)
                    f.write(block)
                got = digest.hexdigest()
                if got != sha256:
                    raise DataError(
                        f"checksum mismatch for {label} downloaded from {url}: "
                        f"sha256 {got}, expected {sha256}; no file was kept"
                    )
        except OSError as e:  # writing the cache file
            raise DataError(f"cannot write {dest} ({e.strerror or e})") from None
    return dest


def find_corpus(name: str, *, url: str | None = None, timeout: float = DEFAULT_TIMEOUT_S,
                download_missing: bool = True) -> Path:
    """Path of the named corpus (see the module docstring for where it looks).

    ``url`` replaces the registry's download address (tests serve a local
    copy). Unknown names, local-only corpora that are nowhere to be found and
    failed downloads raise ``DataError``.
    """
    if name not in CORPORA:
        raise DataError(f"unknown corpus {name!r}; known corpora: {', '.join(sorted(CORPORA))}")
    filename, canonical, sha256 = CORPORA[name]
    folder = data_dir()
    if folder is not None and (folder / filename).is_file():
        return folder / filename
    cached = cache_dir() / filename
    if cached.is_file():
        return cached
    source = url or canonical
    if source is None or not download_missing:
        raise DataError(f"corpus {name!r} not found; {_how_to_provide(filename)}")
    return download(source, cached, sha256, name=name, timeout=timeout)
