"""Shared fixtures: where the real corpora live, and rnnlab's thread count."""
import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """``$RNNLAB_DATA_DIR``, or ``<repo>/../shared/data``; skips the test when missing."""
    default = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
    path = Path(os.environ.get("RNNLAB_DATA_DIR") or default)
    if not path.is_dir():
        pytest.skip(f"real corpora not found at {path} (set RNNLAB_DATA_DIR)")
    return path


@pytest.fixture(scope="session")
def reddit(data_dir) -> str:
    """The tutorial's Reddit comments, the sample (a path as a string)."""
    return str(data_dir / "reddit-comments-2015-08-sample.csv")


@pytest.fixture
def set_threads():
    """rnnlab's thread count, set for one test by ``set_threads(n)`` and restored after it."""
    from rnnlab import threads

    before = threads.get_num_threads()
    yield threads.set_num_threads
    threads.set_num_threads(before)


@pytest.fixture
def torch_float64():
    """PyTorch's default dtype float64 for one test (the cross-checks compare to 1e-10), restored after."""
    torch = pytest.importorskip("torch")
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture(autouse=True)
def corpus_cache(tmp_path_factory, monkeypatch) -> Path:
    """Every test's corpus cache (``RNNLAB_CACHE_DIR``): a fresh folder, never the home directory's."""
    path = tmp_path_factory.mktemp("corpus-cache")
    monkeypatch.setenv("RNNLAB_CACHE_DIR", str(path))
    return path
