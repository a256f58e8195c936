"""Corpora as id arrays: the four formats, splits, saving and memory-mapped loading."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnnlab.data.prepare import (
    Corpus,
    load_prepared,
    prepare_corpus,
    save_prepared,
    split_corpus,
)
from rnnlab.data.tokenize import SENTENCE_END, SENTENCE_START, UNKNOWN_TOKEN
from rnnlab.data.vocab import Vocab
from rnnlab.errors import DataError

S, E = SENTENCE_START, SENTENCE_END


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_tokens_format_is_the_word_language_model_stream(data_dir):
    path = data_dir / "wikitext-2-valid.txt"
    corpus = prepare_corpus(path, "tokens")
    with open(path, encoding="utf8") as f:
        words = [w for line in f for w in line.split() + ["<eos>"]]
    assert corpus.kind == "stream" and corpus.offsets is None
    assert corpus.ids.dtype == np.int32 and corpus.ids.shape == (len(words),)
    assert corpus.vocab.decode(corpus.ids) == words
    assert corpus.vocab.id_to_token[-1] == "<unk>"  # present in WikiText, kept once, last
    assert corpus.vocab.id_to_token.count("<unk>") == 1
    assert len(corpus.vocab) == len(set(words))


def test_chars_format(data_dir):
    path = data_dir / "tinyshakespeare.txt"
    corpus = prepare_corpus(path, "chars")
    text = path.read_text(encoding="utf-8")
    assert len(corpus.vocab) == 65 + 1  # 65 characters and the unknown token
    assert "".join(corpus.vocab.decode(corpus.ids)) == text
    small = prepare_corpus(path, "chars", 11)
    assert len(small.vocab) == 11 and small.ids.max() == 10


def test_text_format_lines_are_wrapped_sentences(tmp_path):
    path = write(tmp_path, "t.txt", "Hello World.\n\n  \nIt's ok\n")
    corpus = prepare_corpus(path, "text")
    assert corpus.kind == "sentences" and corpus.offsets.tolist() == [0, 5, 10]
    assert [corpus.vocab.decode(s) for s in corpus.sentences] == [
        [S, "Hello", "World", ".", E], [S, "It", "'s", "ok", E]]
    assert corpus.vocab.id_to_token[-1] == UNKNOWN_TOKEN


@pytest.mark.filterwarnings("ignore::rnnlab.data.readers.TruncatedCorpusWarning")
def test_csv_format_matches_the_tutorial_loader(data_dir):
    from rnnlab.data.prepare import tutorial_sentences

    path = data_dir / "reddit-comments-2015-08-sample.csv"
    corpus = prepare_corpus(path, "csv", 1500)
    X, y, vocab = tutorial_sentences(path, 1500, verbose=False)
    assert corpus.vocab == vocab and corpus.num_sentences == len(X)
    for s, x, t in zip(corpus.sentences, X, y):
        assert np.array_equal(s[:-1], x) and np.array_equal(s[1:], t)


def test_existing_vocab_encodes_another_file(tmp_path):
    vocab = Vocab.build(["a", "b"], unk="<unk>")
    corpus = prepare_corpus(write(tmp_path, "v.txt", "a c\nb\n"), "tokens", vocab=vocab)
    assert corpus.vocab is vocab
    assert vocab.decode(corpus.ids) == ["a", "<unk>", "<unk>", "b", "<unk>"]  # <eos> unseen in training


@pytest.mark.parametrize("fmt, text", [
    ("csv", "body\n"), ("csv", 'body\n"Ok"\n'), ("text", "\n \n"), ("tokens", ""), ("chars", ""),
])
def test_empty_corpus(tmp_path, fmt, text):
    with pytest.raises(DataError, match="no (sentences|tokens|characters) in the corpus"):
        prepare_corpus(write(tmp_path, "e", text), fmt)


def test_unknown_format(tmp_path):
    with pytest.raises(DataError, match="unknown corpus format 'xml'"):
        prepare_corpus(write(tmp_path, "e", "x"), "xml")


def stream(n):
    vocab = Vocab.build([str(i) for i in range(n)], unk="<unk>")
    return Corpus(vocab, np.arange(n, dtype=np.int32), "stream")


def test_split_stream_last_fraction_of_tokens():
    train, valid = split_corpus(stream(1000), 0.1)
    assert train.ids.tolist() == list(range(900)) and valid.ids.tolist() == list(range(900, 1000))
    big = Corpus(Vocab.build(["x"], unk="<unk>"), np.zeros(1115394, dtype=np.int32), "stream")
    t, v = split_corpus(big, 0.1)
    assert t.num_tokens == int(1115394 * 0.9)  # nanoGPT's Tiny Shakespeare split
    with pytest.raises(DataError, match="too short"):
        split_corpus(stream(1), 0.5)
    for bad in (0, 1, -0.1, 1.5):
        with pytest.raises(DataError, match="between 0 and 1"):
            split_corpus(stream(10), bad)


def test_split_sentences_last_fraction_of_sentences(tmp_path):
    lines = [f"line number {i} ." for i in range(10)]
    corpus = prepare_corpus(write(tmp_path, "t.txt", "\n".join(lines)), "text")
    train, valid = split_corpus(corpus, 0.3)
    assert train.num_sentences == 7 and valid.num_sentences == 3
    decoded = [corpus.vocab.decode(s) for s in train.sentences + valid.sentences]
    assert decoded == [corpus.vocab.decode(s) for s in corpus.sentences]
    assert valid.offsets[0] == 0 and valid.offsets[-1] == valid.num_tokens


def test_save_load_memmap_roundtrip(tmp_path):
    lines = ["a b c", "d e", "a a a a"]
    corpus = prepare_corpus(write(tmp_path, "t.txt", "\n".join(lines)), "text")
    folder = save_prepared(corpus, tmp_path / "prep")
    assert sorted(p.name for p in folder.iterdir()) == ["corpus.json", "ids.npy", "offsets.npy", "vocab.json"]
    loaded = load_prepared(folder)
    assert isinstance(loaded.ids, np.memmap) and not loaded.ids.flags.writeable
    assert np.array_equal(loaded.ids, corpus.ids) and np.array_equal(loaded.offsets, corpus.offsets)
    assert loaded.vocab == corpus.vocab and loaded.kind == "sentences"
    in_memory = load_prepared(folder, mmap=False)
    assert not isinstance(in_memory.ids, np.memmap) and np.array_equal(in_memory.ids, corpus.ids)

    # A stream saved into the same folder replaces it, leaving no stale offsets.
    save_prepared(stream(50), folder)
    again = load_prepared(folder)
    assert again.kind == "stream" and again.ids.tolist() == list(range(50))
    assert not (folder / "offsets.npy").exists()


def test_load_rejects_broken_folders(tmp_path):
    folder = save_prepared(stream(20), tmp_path / "p")
    np.save(folder / "ids.npy", np.array([[1, 2]]))
    with pytest.raises(DataError, match="1-D integer array"):
        load_prepared(folder)
    np.save(folder / "ids.npy", np.array([object()] * 20, dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="ids.npy: not a readable .npy array"):
        load_prepared(folder)  # never unpickles
    (folder / "ids.npy").write_bytes(b"garbage")
    with pytest.raises(DataError, match="ids.npy"):
        load_prepared(folder)
    np.save(folder / "ids.npy", np.arange(1, 21, dtype=np.int32))  # id 20 with a vocabulary of 21 is ok
    load_prepared(folder)
    np.save(folder / "ids.npy", np.arange(2, 22, dtype=np.int32))
    with pytest.raises(DataError, match="token id 21 is outside the vocabulary of 21"):
        load_prepared(folder)
    np.save(folder / "ids.npy", np.arange(5, dtype=np.int32))
    with pytest.raises(DataError, match="holds 5 ids"):
        load_prepared(folder)
    with pytest.raises(DataError, match="not a prepared corpus"):
        load_prepared(tmp_path)


# -- streamed preparation: the same folder as save_prepared(prepare_corpus(...)) ------------

TRICKY_LINES = ("\ufeffThe cat sat on the mat .\r\nA <unk> said <eos> twice\rcafé , naïve  \t cat\n\n  \n"
                "sep\u2028inside\x1cline and\xa0nbsp\r\n\r\nThe end . the END\nlast line without an end")
TRICKY_CSV = ('id,body\r\n1,"Hello there. This is a test! Is it? Yes."\n2,"Multi\nline body, with ""quotes"". '
              'Short."\n3,ok\n\n4,"Another comment here. And more words follow; the cat sat."\n'
              '5,"The CAT sat. Hello there, world."\n')
TEXTS = {"tokens": TRICKY_LINES, "chars": TRICKY_LINES, "text": TRICKY_LINES, "csv": TRICKY_CSV}
OTHER_TOKENS = ["the", "cat", "SENTENCE_START", "SENTENCE_END", ".", "t", "e", " ", "<eos>", "hello"]


def given_vocab(fmt):
    from rnnlab.data.prepare import DEFAULT_UNK

    return Vocab.build(OTHER_TOKENS, unk=DEFAULT_UNK[fmt])


def assert_same_folder(folder, expected: Corpus, tmp_path):
    """``folder`` holds exactly what ``save_prepared(expected, ...)`` writes (ignoring the manifest)."""
    import json

    reference = save_prepared(expected, tmp_path / "reference")
    got = load_prepared(folder)
    assert got.kind == expected.kind and got.vocab == expected.vocab
    assert got.ids.dtype == np.int32 and np.array_equal(got.ids, expected.ids)
    if expected.offsets is None:
        assert got.offsets is None and not (folder / "offsets.npy").exists()
    else:
        assert np.array_equal(got.offsets, expected.offsets)
        assert np.load(folder / "offsets.npy").dtype == np.int64
    assert (folder / "vocab.json").read_bytes() == (reference / "vocab.json").read_bytes()
    meta = json.loads((folder / "corpus.json").read_text())
    assert {k: v for k, v in meta.items() if k not in ("source", "preparation")} == \
        json.loads((reference / "corpus.json").read_text())


@pytest.mark.filterwarnings("ignore::rnnlab.data.vocab.VocabularyCappedWarning")
@pytest.mark.parametrize("block_bytes", [1, 13, 1 << 20])
@pytest.mark.parametrize("vocab_mode", ["every token", "capped", "given"])
@pytest.mark.parametrize("fmt", ["tokens", "chars", "text", "csv"])
def test_write_prepared_matches_prepare_corpus(tmp_path, fmt, vocab_mode, block_bytes):
    from rnnlab.data.prepare import write_prepared

    path = tmp_path / "corpus"
    path.write_bytes(TEXTS[fmt].encode("utf-8"))
    vocab_size = 6 if vocab_mode == "capped" else None
    vocab = given_vocab(fmt) if vocab_mode == "given" else None
    expected = prepare_corpus(path, fmt, vocab_size, vocab=vocab)
    folder = write_prepared(path, fmt, tmp_path / "streamed", vocab_size, vocab=vocab, block_bytes=block_bytes)
    assert_same_folder(folder, expected, tmp_path)


@pytest.mark.parametrize("fmt", ["tokens", "text"])
def test_two_workers_give_the_same_folder(tmp_path, fmt):
    from rnnlab.data.prepare import write_prepared

    path = write(tmp_path, "c.txt", TRICKY_LINES * 20)
    expected = prepare_corpus(path, fmt, 9)
    folder = write_prepared(path, fmt, tmp_path / "streamed", 9, workers=2, block_bytes=64)
    assert_same_folder(folder, expected, tmp_path)


@pytest.mark.filterwarnings("ignore::rnnlab.data.readers.TruncatedCorpusWarning")
@pytest.mark.parametrize("name, fmt, vocab_size", [
    ("wikitext-2-valid.txt", "tokens", None), ("wikitext-2-valid.txt", "text", 2000),
    ("tinyshakespeare.txt", "chars", 40), ("reddit-comments-2015-08-sample.csv", "csv", 1500),
])
def test_write_prepared_matches_on_the_real_corpora(data_dir, tmp_path, name, fmt, vocab_size):
    from rnnlab.data.prepare import write_prepared

    expected = prepare_corpus(data_dir / name, fmt, vocab_size)
    folder = write_prepared(data_dir / name, fmt, tmp_path / "streamed", vocab_size, block_bytes=4093)
    assert_same_folder(folder, expected, tmp_path)


_PIECES = ["a", "b", "é", "cat", " ", "  ", "\t", "\n", "\r", "\r\n", "\u2028", "\x1c", "\xa0", "<unk>", "<eos>", "."]


@pytest.mark.filterwarnings("ignore::rnnlab.data.vocab.VocabularyCappedWarning")
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pieces=st.lists(st.sampled_from(_PIECES), max_size=60), fmt=st.sampled_from(["tokens", "chars", "text"]),
       block_bytes=st.integers(1, 40), vocab_size=st.sampled_from([None, 2, 4]))
def test_write_prepared_matches_on_any_text(tmp_path, pieces, fmt, block_bytes, vocab_size):
    import shutil

    from rnnlab.data.prepare import write_prepared

    folder = tmp_path / "streamed"
    shutil.rmtree(folder, ignore_errors=True)
    path = write(tmp_path, "c.txt", "".join(pieces))

    def outcome(prepare):
        try:
            return prepare()
        except DataError as e:
            return str(e)

    expected = outcome(lambda: prepare_corpus(path, fmt, vocab_size))
    streamed = outcome(lambda: write_prepared(path, fmt, folder, vocab_size, block_bytes=block_bytes))
    if isinstance(expected, str):
        assert streamed == expected
    else:
        got = load_prepared(streamed)
        assert got.vocab == expected.vocab and np.array_equal(got.ids, expected.ids)
        assert (got.offsets is None) == (expected.offsets is None)
        if got.offsets is not None:
            assert np.array_equal(got.offsets, expected.offsets)


@pytest.mark.parametrize("fmt, text", [
    ("csv", "body\n"), ("csv", 'body\n"Ok"\n'), ("text", "\n \n"), ("tokens", ""), ("chars", ""),
])
def test_write_prepared_empty_corpus_errors_as_prepare_corpus(tmp_path, fmt, text):
    from rnnlab.data.prepare import write_prepared

    path = write(tmp_path, "e", text)
    with pytest.raises(DataError) as expected:
        prepare_corpus(path, fmt)
    with pytest.raises(DataError) as streamed:
        write_prepared(path, fmt, tmp_path / "out")
    assert str(streamed.value) == str(expected.value)
    assert not (tmp_path / "out" / "corpus.json").exists()


def test_write_prepared_hashes_every_byte_it_reads(tmp_path):
    import hashlib

    from rnnlab.data.prepare import write_prepared

    for fmt in ("tokens", "chars", "text", "csv"):
        path = tmp_path / f"c.{fmt}"
        path.write_bytes(TEXTS[fmt].encode("utf-8"))  # a byte-order mark first for the line formats
        hasher = hashlib.sha256()
        folder = write_prepared(path, fmt, tmp_path / fmt, hasher=hasher, block_bytes=5,
                                manifest=lambda: {"source": {"sha256": hasher.hexdigest()}})
        assert hasher.hexdigest() == hashlib.sha256(path.read_bytes()).hexdigest()
        import json
        assert json.loads((folder / "corpus.json").read_text())["source"]["sha256"] == hasher.hexdigest()


def test_blocks_are_read_as_they_are_needed(tmp_path):
    """At most two blocks per worker wait in memory: memory does not grow with the corpus."""
    from rnnlab.data.prepare import counted_blocks

    for workers in (1, 2):
        pulled = []

        def blocks():
            for i in range(40):
                pulled.append(i)
                yield f"w{i} x\n"

        for k, block in enumerate(counted_blocks("tokens", blocks(), workers)):
            assert block.tokens == [f"w{k}", "x", "<eos>"]
            assert len(pulled) <= k + 1 + 2 * workers


def test_array_file_writes_a_npy_in_blocks(tmp_path):
    from rnnlab.data.prepare import ArrayFile, id_bounds, remap_ids

    out = ArrayFile(tmp_path / "a.npy", np.int32)
    for start in range(0, 1000, 300):
        out.append(np.arange(start, min(start + 300, 1000)))
    out.close()
    assert np.array_equal(np.load(tmp_path / "a.npy"), np.arange(1000))
    remap_ids(tmp_path / "a.npy", out.data_offset, out.length, np.arange(1000)[::-1].copy(), block=77)
    mapped = np.load(tmp_path / "a.npy", mmap_mode="r")
    assert np.array_equal(mapped, np.arange(1000)[::-1])
    assert id_bounds(mapped, block=64) == (0, 999) == id_bounds(np.asarray(mapped))


def test_default_workers(monkeypatch):
    from rnnlab.data import prepare

    monkeypatch.setattr(prepare.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(prepare.os, "getloadavg", lambda: (0.2, 0.0, 0.0))
    big = 1 << 30
    assert prepare.default_workers(1 << 20, "tokens") == 1  # small: not worth a pool
    assert prepare.default_workers(big, "chars") == 1  # counting characters beats handing them over
    assert prepare.default_workers(big, "tokens") == prepare.default_workers(2 << 20, "text") == 2
    monkeypatch.setattr(prepare.os, "getloadavg", lambda: (1.3, 0.0, 0.0))
    assert prepare.default_workers(big, "tokens") == 1  # no core to spare
    monkeypatch.setattr(prepare.os, "sched_getaffinity", lambda pid: set(range(32)), raising=False)
    assert prepare.default_workers(big, "text") == prepare.MAX_WORKERS
    monkeypatch.setattr(prepare.os, "getloadavg", lambda: (30.5, 0.0, 0.0))
    assert prepare.default_workers(big, "text") == 2


@pytest.mark.parametrize("block_bytes", [1, 2, 3, 5, 8, 64, 1 << 20])
def test_line_blocks_are_whole_lines_of_read_chars(tmp_path, block_bytes):
    from rnnlab.data.readers import iter_line_blocks, read_chars

    path = tmp_path / "c.txt"
    path.write_bytes(TRICKY_LINES.encode("utf-8") + b"\r")  # a byte-order mark first, a lone "\r" last
    blocks = list(iter_line_blocks(path, block_bytes))
    assert "".join(blocks) == read_chars(path) and not read_chars(path).startswith("\ufeff")
    assert all(block.endswith("\n") and "\r" not in block for block in blocks)
    assert all(blocks)
