"""Corpora prepared once: source records, manifests, the cache and prepared folders."""
import hashlib
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from rnnlab.data import cache
from rnnlab.data.cache import (
    CorruptCacheEntryWarning,
    SourceRecord,
    check_same_source,
    corpus_cache_dir,
    file_sha256,
    open_corpus,
    prepare_folder,
    read_manifest,
    source_record,
    vocab_sha256,
)
from rnnlab.data.prepare import load_prepared, prepare_corpus, save_prepared
from rnnlab.data.vocab import Vocab
from rnnlab.errors import DataError

LINES = "the cat sat on the mat\nthe dog sat\n<unk> ate the cat\n"


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", newline="")
    return path


def same(corpus, expected):
    return (corpus.vocab == expected.vocab and np.array_equal(corpus.ids, expected.ids)
            and corpus.kind == expected.kind
            and (corpus.offsets is None) == (expected.offsets is None)
            and (corpus.offsets is None or np.array_equal(corpus.offsets, expected.offsets)))


@pytest.fixture
def preparations(monkeypatch):
    """The number of times a corpus file was prepared (read and encoded)."""
    calls = []
    real = cache.write_prepared

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(cache, "write_prepared", counting)
    return calls


@pytest.fixture
def no_hashing(monkeypatch):
    """Makes hashing a corpus file fail: the test shows a path that never hashes."""
    def refuse(path):
        raise AssertionError(f"hashed {path}")

    monkeypatch.setattr(cache, "file_sha256", refuse)


def entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- where the cache lives -------------------------------------------------------------------


def test_cache_folder_comes_from_the_environment(monkeypatch, tmp_path, corpus_cache):
    assert corpus_cache_dir() == corpus_cache  # the autouse fixture: never the home directory
    monkeypatch.delenv("RNNLAB_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert corpus_cache_dir() == tmp_path / "xdg" / "rnnlab" / "corpora"
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert corpus_cache_dir() == tmp_path / "home" / ".cache" / "rnnlab" / "corpora"


def test_open_corpus_prepares_into_the_default_cache(tmp_path, corpus_cache):
    path = write(tmp_path, "c.txt", LINES)
    opened = open_corpus(path, "tokens")
    [entry] = entries(corpus_cache)
    assert entry.startswith("c.txt.tokens.")
    assert isinstance(opened.corpus.ids, np.memmap)
    assert Path(opened.corpus.ids.filename).parent == corpus_cache / entry


# -- records and hashes ----------------------------------------------------------------------


def test_source_record_and_hashes(tmp_path):
    path = write(tmp_path, "c.txt", LINES)
    digest = hashlib.sha256(LINES.encode()).hexdigest()
    assert file_sha256(path) == digest
    record = source_record(tmp_path / "." / "c.txt")
    assert record == SourceRecord(str(path.resolve()), len(LINES.encode()), digest)
    assert SourceRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record
    check_same_source(record, record)
    elsewhere = SourceRecord("/elsewhere/c.txt", record.size, record.sha256)
    check_same_source(record, elsewhere)  # the bytes matter, not where they are
    path.write_text(LINES.replace("cat", "cow"))
    with pytest.raises(DataError, match=r"c.txt: not the corpus recorded .*sha256"):
        check_same_source(record, source_record(path))
    with pytest.raises(DataError, match="needs a path, a size and a sha256"):
        SourceRecord.from_dict({"path": "x", "size": "1", "sha256": "y"})
    assert vocab_sha256(Vocab.build(["a"], unk="<unk>")) != vocab_sha256(Vocab.build(["b"], unk="<unk>"))


@pytest.mark.parametrize("make, message", [
    (lambda tmp: tmp / "missing.txt", "missing.txt: no such file"),
    (lambda tmp: tmp, "is a folder, not a corpus file or a prepared corpus"),
])
def test_unreadable_source(tmp_path, make, message):
    with pytest.raises(DataError, match=message):
        open_corpus(make(tmp_path), "tokens")
    with pytest.raises(DataError, match=message.split(",")[0]):
        source_record(make(tmp_path))


def test_undecodable_source_leaves_nothing_in_the_cache(tmp_path, corpus_cache):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine\n\xff\xfe\n")
    with pytest.raises(DataError, match=r"bad.txt: invalid UTF-8 at byte offset 5"):
        open_corpus(path, "tokens")
    assert entries(corpus_cache) == []


def test_format_is_needed_for_a_file(tmp_path):
    with pytest.raises(DataError, match="the corpus format is needed"):
        open_corpus(write(tmp_path, "c.txt", LINES))
    with pytest.raises(DataError, match="unknown corpus format 'xml'"):
        open_corpus(write(tmp_path, "c.txt", LINES), "xml")


def test_unwritable_cache_names_the_variable(tmp_path):
    (tmp_path / "blocker").write_text("a file where the cache folder should be")
    with pytest.raises(DataError, match="cannot create the corpus cache .*RNNLAB_CACHE_DIR"):
        open_corpus(write(tmp_path, "c.txt", LINES), "tokens", cache_dir=tmp_path / "blocker" / "cache")


# -- the cache -------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::rnnlab.data.readers.TruncatedCorpusWarning")
@pytest.mark.parametrize("fmt, vocab_size", [("tokens", None), ("chars", 5), ("text", 6), ("csv", None)])
def test_cached_start_is_the_prepared_corpus(tmp_path, preparations, fmt, vocab_size):
    text = LINES if fmt != "csv" else 'body\n"The cat sat. The dog sat on the mat!"\n"A cat, a dog."\n'
    path = write(tmp_path, "c", text)
    expected = prepare_corpus(path, fmt, vocab_size)
    first = open_corpus(path, fmt, vocab_size)
    second = open_corpus(path, fmt, vocab_size)
    assert len(preparations) == 1
    assert same(first.corpus, expected) and same(second.corpus, expected)
    assert first.source == second.source == source_record(path)


def test_manifest_records_source_and_settings(tmp_path, corpus_cache):
    path = write(tmp_path, "c.txt", LINES)
    vocab = Vocab.build(["the", "cat"], unk="<unk>")
    open_corpus(path, "tokens", 3)
    open_corpus(path, "tokens", vocab=vocab)
    manifests = {m.preparation.vocab_sha256: m for m in map(read_manifest, corpus_cache.iterdir())}
    built, given = manifests[None], manifests[vocab_sha256(vocab)]
    assert built.source == given.source == source_record(path)
    assert built.source.path == str(path.resolve()) and os.path.isabs(built.source.path)
    assert (built.preparation.fmt, built.preparation.vocab_size, built.preparation.unk) == ("tokens", 3, "<unk>")
    assert given.preparation.vocab_size is None
    stat = os.stat(path)
    assert built.stat == (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)


def test_settings_make_separate_entries(tmp_path, corpus_cache, preparations):
    path = write(tmp_path, "c.txt", LINES)
    train = Vocab.build(["the", "sat", "<eos>"], unk="<unk>")
    other = Vocab.build(["cat", "dog"], unk="<unk>")
    for fmt, size, vocab in [("tokens", None, None), ("tokens", 4, None), ("chars", None, None),
                             ("tokens", None, train), ("tokens", None, other)]:
        opened = open_corpus(path, fmt, size, vocab=vocab)
        assert same(opened.corpus, prepare_corpus(path, fmt, size, vocab=vocab))
        if vocab is not None:
            assert opened.corpus.vocab is vocab
    assert len(entries(corpus_cache)) == len(preparations) == 5
    open_corpus(path, "tokens", 0)  # 0 asks for every token, like None
    open_corpus(path, "tokens", 7, vocab=train)  # a given vocabulary makes the size irrelevant
    assert len(preparations) == 5


def test_changed_source_is_prepared_again(tmp_path, preparations):
    path = write(tmp_path, "c.txt", LINES)
    open_corpus(path, "tokens")
    path.write_text(LINES + "a new line\n")
    opened = open_corpus(path, "tokens")
    assert len(preparations) == 2 and same(opened.corpus, prepare_corpus(path, "tokens"))


def test_same_size_change_with_the_old_mtime_is_caught(tmp_path, preparations, monkeypatch):
    """Copying tools keep mtimes; the ctime and the hash still tell the files apart."""
    monkeypatch.setattr(cache, "STAT_SLACK_NS", 0)
    path = write(tmp_path, "c.txt", LINES)
    old = os.stat(path)
    open_corpus(path, "tokens")
    path.write_text(LINES.replace("cat", "cow"))  # same size
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert os.stat(path).st_size == old.st_size and os.stat(path).st_mtime_ns == old.st_mtime_ns
    opened = open_corpus(path, "tokens")
    assert len(preparations) == 2
    assert "cow" in opened.corpus.vocab and same(opened.corpus, prepare_corpus(path, "tokens"))
    assert opened.source.sha256 == file_sha256(path)


def test_touched_source_is_hashed_not_prepared(tmp_path, preparations, monkeypatch):
    monkeypatch.setattr(cache, "STAT_SLACK_NS", 0)
    path = write(tmp_path, "c.txt", LINES)
    first = open_corpus(path, "tokens")
    os.utime(path, ns=(1, 1_000_000_000))  # same bytes, another mtime
    second = open_corpus(path, "tokens")
    assert len(preparations) == 1 and second.source == first.source
    monkeypatch.setattr(cache, "file_sha256", lambda p: pytest.fail("hashed again"))
    third = open_corpus(path, "tokens")  # the hash refreshed the recorded times
    assert third.source == first.source


def test_settled_source_is_trusted_by_its_stat_recent_one_is_hashed(tmp_path, monkeypatch):
    path = write(tmp_path, "c.txt", LINES)
    open_corpus(path, "tokens")  # the file is younger than STAT_SLACK_NS: its times may not show a change
    hashed = []
    real = cache.file_sha256
    monkeypatch.setattr(cache, "file_sha256", lambda p: hashed.append(p) or real(p))
    open_corpus(path, "tokens")
    assert len(hashed) == 1
    monkeypatch.setattr(cache, "STAT_SLACK_NS", 0)
    open_corpus(path, "tokens")  # now old enough
    assert len(hashed) == 1
    open_corpus(path, "tokens", verify=True)
    assert len(hashed) == 2


def test_settled_source_is_trusted_by_its_stat(tmp_path, monkeypatch, no_hashing):
    monkeypatch.setattr(cache, "STAT_SLACK_NS", 0)
    path = write(tmp_path, "c.txt", LINES)
    open_corpus(path, "tokens")  # hashed as it is read, not by file_sha256
    assert same(open_corpus(path, "tokens").corpus, prepare_corpus(path, "tokens"))


@pytest.mark.parametrize("damage", [
    lambda e: (e / "ids.npy").write_bytes((e / "ids.npy").read_bytes()[:-4]),
    lambda e: (e / "ids.npy").unlink(),
    lambda e: (e / "corpus.json").write_text("{not json"),
    lambda e: (e / "vocab.json").write_text("[]"),
    lambda e: np.save(e / "ids.npy", np.full(15, 99, dtype=np.int32)),
    lambda e: (e / "corpus.json").write_text(json.dumps(
        json.loads((e / "corpus.json").read_text()) | {"preparation": {"fmt": "chars"}})),
])
def test_corrupt_entry_is_prepared_again(tmp_path, corpus_cache, preparations, damage):
    path = write(tmp_path, "c.txt", LINES)
    open_corpus(path, "tokens")
    [entry] = corpus_cache.iterdir()
    damage(entry)
    with pytest.warns(CorruptCacheEntryWarning, match="cached corpus unusable"):
        opened = open_corpus(path, "tokens")
    assert len(preparations) == 2 and same(opened.corpus, prepare_corpus(path, "tokens"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert same(open_corpus(path, "tokens").corpus, opened.corpus)
    assert entries(corpus_cache) == [entry.name]


def test_half_written_entries_are_never_read(tmp_path, corpus_cache, preparations):
    path = write(tmp_path, "c.txt", LINES)
    open_corpus(path, "tokens")
    [entry] = corpus_cache.iterdir()
    (entry / "corpus.json").unlink()  # as a folder looks before its last file is written
    opened = open_corpus(path, "tokens")
    assert len(preparations) == 2 and same(opened.corpus, prepare_corpus(path, "tokens"))
    assert entries(corpus_cache) == [entry.name]  # no temporary folder left behind


def test_failed_preparation_leaves_no_temporary_folder(tmp_path, corpus_cache, monkeypatch):
    path = write(tmp_path, "c.txt", LINES)

    def interrupted(*args, **kwargs):
        Path(args[2], "ids.npy").parent.mkdir(parents=True)
        Path(args[2], "ids.npy").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(cache, "write_prepared", interrupted)
    with pytest.raises(KeyboardInterrupt):
        open_corpus(path, "tokens")
    assert entries(corpus_cache) == []


def test_source_changing_while_prepared_is_refused(tmp_path, corpus_cache, monkeypatch):
    path = write(tmp_path, "c.txt", LINES)
    real = cache.write_prepared

    def appending(*args, **kwargs):
        with open(path, "a") as f:
            f.write("more\n")
        return real(*args, **kwargs)

    monkeypatch.setattr(cache, "write_prepared", appending)
    with pytest.raises(DataError, match="c.txt: changed while it was being prepared"):
        open_corpus(path, "tokens")
    assert entries(corpus_cache) == []


def test_an_entry_published_meanwhile_by_another_process_is_kept(tmp_path, corpus_cache, monkeypatch):
    path = write(tmp_path, "c.txt", LINES)
    open_corpus(path, "tokens")
    [entry] = corpus_cache.iterdir()
    theirs = (entry / "ids.npy").stat().st_ino
    (entry / "corpus.json").rename(entry / "aside.json")  # we see no entry and prepare ...
    real = cache.write_prepared

    def racing(*args, **kwargs):
        folder = real(*args, **kwargs)
        (entry / "aside.json").rename(entry / "corpus.json")  # ... while another process finishes its own
        return folder

    monkeypatch.setattr(cache, "write_prepared", racing)
    opened = open_corpus(path, "tokens")
    assert (entry / "ids.npy").stat().st_ino == theirs
    assert same(opened.corpus, prepare_corpus(path, "tokens"))
    assert entries(corpus_cache) == [entry.name]


def test_a_stale_entry_is_replaced_in_place(tmp_path, corpus_cache):
    path = write(tmp_path, "c.txt", LINES)
    open_corpus(path, "tokens")
    [entry] = corpus_cache.iterdir()
    path.write_text(LINES * 2)
    opened = open_corpus(path, "tokens")
    assert same(opened.corpus, prepare_corpus(path, "tokens"))
    assert read_manifest(entry).source == source_record(path)
    assert entries(corpus_cache) == [entry.name]


_RACE = """
import sys
from rnnlab.data.cache import open_corpus
from rnnlab.data.prepare import prepare_corpus
import numpy as np
opened = open_corpus(sys.argv[1], "tokens", workers=1)
assert np.array_equal(opened.corpus.ids, prepare_corpus(sys.argv[1], "tokens").ids)
print(opened.source.sha256)
"""


def test_processes_preparing_the_same_entry_at_once(tmp_path, corpus_cache):
    path = write(tmp_path, "c.txt", LINES * 30000)
    runs = [subprocess.Popen([sys.executable, "-c", _RACE, str(path)], stdout=subprocess.PIPE, text=True,
                             env=os.environ | {"RNNLAB_CACHE_DIR": str(corpus_cache)}) for _ in range(3)]
    outputs = [run.communicate(timeout=120)[0].strip() for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0]
    assert set(outputs) == {file_sha256(path)}
    [entry] = entries(corpus_cache)
    assert same(load_prepared(corpus_cache / entry), prepare_corpus(path, "tokens"))


# -- prepared folders --------------------------------------------------------------------------


def test_prepare_folder_and_open_it(tmp_path, preparations):
    path = write(tmp_path, "c.txt", LINES)
    out = prepare_folder(path, "text", None, tmp_path / "prepared")
    assert out == (tmp_path / "prepared").resolve()
    assert entries(out) == ["corpus.json", "ids.npy", "offsets.npy", "vocab.json"]
    opened = open_corpus(out)
    assert same(opened.corpus, prepare_corpus(path, "text")) and opened.source == source_record(path)
    assert same(open_corpus(out, "text").corpus, opened.corpus)
    with pytest.raises(DataError, match="prepared from format 'text', not 'tokens'"):
        open_corpus(out, "tokens")
    with pytest.raises(DataError, match="prepared with a vocabulary of every token, not 5"):
        open_corpus(out, "text", 5)
    with pytest.raises(DataError, match="prepared with another vocabulary"):
        open_corpus(out, "text", vocab=Vocab.build(["x"]))
    given = open_corpus(out, vocab=Vocab.from_json(opened.corpus.vocab.to_json()))
    assert given.corpus.vocab == opened.corpus.vocab
    assert len(preparations) == 1


def test_prepare_folder_with_a_given_vocabulary(tmp_path):
    train = write(tmp_path, "train.txt", LINES)
    valid = write(tmp_path, "valid.txt", "the bird sat\n")
    vocab = open_corpus(train, "tokens").corpus.vocab
    out = prepare_folder(valid, "tokens", None, tmp_path / "valid", vocab=vocab)
    assert read_manifest(out).preparation.vocab_sha256 == vocab_sha256(vocab)
    opened = open_corpus(out, "tokens", vocab=vocab)
    assert opened.corpus.vocab is vocab and same(opened.corpus, prepare_corpus(valid, "tokens", vocab=vocab))


def test_old_prepared_folders_still_open(tmp_path):
    corpus = prepare_corpus(write(tmp_path, "c.txt", LINES), "tokens")
    folder = save_prepared(corpus, tmp_path / "old")
    assert read_manifest(folder) is None
    opened = open_corpus(folder, "tokens")
    assert opened.source is None and same(opened.corpus, corpus)
    with pytest.raises(DataError, match="holds a stream corpus, not one of format 'text'"):
        open_corpus(folder, "text")


def test_prepare_folder_replaces_only_a_prepared_corpus(tmp_path):
    path = write(tmp_path, "c.txt", LINES)
    out = tmp_path / "out"
    out.mkdir()
    prepare_folder(path, "tokens", None, out)  # an empty folder is fine
    path.write_text("other words entirely\n")
    prepare_folder(path, "chars", None, out)  # a prepared corpus is replaced whole
    assert same(load_prepared(out), prepare_corpus(path, "chars"))
    assert entries(tmp_path) == ["c.txt", "out"]

    for name in ("notes.txt", ".git"):
        (out / name).write_text("mine")
        with pytest.raises(DataError, match=rf"out: not empty and not a prepared corpus \({name}\); refusing"):
            prepare_folder(path, "tokens", None, out)
        assert (out / name).read_text() == "mine"
        (out / name).unlink()
    other = tmp_path / "other"
    other.mkdir()
    (other / "corpus.json").write_text('{"format": "something else"}')
    with pytest.raises(DataError, match="not an rnnlab prepared corpus"):
        prepare_folder(path, "tokens", None, other)
    with pytest.raises(DataError, match="exists and is not a folder"):
        prepare_folder(path, "tokens", None, path)
    with pytest.raises(DataError, match="other: is a folder, not a corpus file"):
        prepare_folder(other, "tokens", None, tmp_path / "new")
    assert entries(tmp_path) == ["c.txt", "other", "out"]
