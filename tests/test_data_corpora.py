"""Named corpora: local lookup, cache, and checked downloads from a local HTTP server."""
import functools
import hashlib
import http.server
import shutil
import socket
import threading

import pytest

from rnnlab.data.corpora import CORPORA, cache_dir, find_corpus, sha256_of
from rnnlab.errors import DataError

GOOD = b"To be, or not to be, that is the question.\n" * 50


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving ``tmp_path / "www"``; yields (folder, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture
def env(tmp_path, monkeypatch):
    """No data dir holding the corpora, an empty cache; returns the cache folder."""
    empty = tmp_path / "no-data"
    empty.mkdir()
    monkeypatch.setenv("RNNLAB_DATA_DIR", str(empty))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "rnnlab"


@pytest.fixture
def toy(monkeypatch):
    """A registry entry for a small file with GOOD's checksum."""
    monkeypatch.setitem(CORPORA, "toy", ("toy.txt", None, hashlib.sha256(GOOD).hexdigest()))


def closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/toy.txt"


def test_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "rnnlab"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "rnnlab"


def test_download_checks_and_caches(server, env, toy):
    root, base = server
    (root / "toy.txt").write_bytes(GOOD)
    path = find_corpus("toy", url=f"{base}/toy.txt")
    assert path == env / "toy.txt" and path.read_bytes() == GOOD
    assert sorted(p.name for p in env.iterdir()) == ["toy.txt"]  # no temp file left
    # The cached copy is used from now on: the download address is never asked again.
    assert find_corpus("toy", url=closed_port_url()) == path


def test_checksum_mismatch_keeps_no_file(server, env, toy):
    root, base = server
    (root / "toy.txt").write_bytes(GOOD[:-1] + b"!")
    with pytest.raises(DataError, match="checksum mismatch for toy .*no file was kept") as info:
        find_corpus("toy", url=f"{base}/toy.txt")
    assert "\n" not in str(info.value)
    assert list(env.iterdir()) == []


def test_offline_says_how_to_provide_the_file(env, toy):
    with pytest.raises(DataError) as info:
        find_corpus("toy", url=closed_port_url(), timeout=5)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("cannot download toy from http://127.0.0.1:")
    assert "set RNNLAB_DATA_DIR to a folder holding toy.txt" in message
    assert str(env / "toy.txt") in message
    assert not (env / "toy.txt").exists()


def test_http_error_is_a_data_error(server, env, toy):
    _, base = server
    with pytest.raises(DataError, match=r"HTTP 404 .*RNNLAB_DATA_DIR"):
        find_corpus("toy", url=f"{base}/missing.txt")


def test_tinyshakespeare_download_verifies_the_real_checksum(server, env, data_dir):
    root, base = server
    shutil.copyfile(data_dir / "tinyshakespeare.txt", root / "input.txt")
    path = find_corpus("tinyshakespeare", url=f"{base}/input.txt")
    assert path == env / "tinyshakespeare.txt"
    assert sha256_of(path) == CORPORA["tinyshakespeare"][2]


def test_data_dir_comes_first(data_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("RNNLAB_DATA_DIR", str(data_dir))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert find_corpus("tinyshakespeare", url=closed_port_url()) == data_dir / "tinyshakespeare.txt"
    assert find_corpus("wikitext-2-valid") == data_dir / "wikitext-2-valid.txt"
    assert not (tmp_path / "cache").exists()


def test_local_only_corpus_not_found(env):
    with pytest.raises(DataError, match=r"corpus 'reddit-sample' not found; set RNNLAB_DATA_DIR"):
        find_corpus("reddit-sample")


def test_unknown_name():
    with pytest.raises(DataError, match="unknown corpus 'nope'; known corpora: reddit-sample, tinyshakespeare"):
        find_corpus("nope")


def test_registry_checksums_match_the_real_files(data_dir):
    for name, (filename, url, sha256) in CORPORA.items():
        assert sha256_of(data_dir / filename) == sha256, name
    assert CORPORA["tinyshakespeare"][1] == (
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt")



def test_a_data_dir_that_does_not_exist_is_an_error_not_a_download(monkeypatch, tmp_path):
    monkeypatch.setenv("RNNLAB_DATA_DIR", str(tmp_path / "typo"))
    with pytest.raises(DataError, match=r"RNNLAB_DATA_DIR is .*typo, which is not a folder"):
        find_corpus("tinyshakespeare", url=closed_port_url())
