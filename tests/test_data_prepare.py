"""Corpora as id arrays: the four formats, splits, saving and memory-mapped loading."""
import numpy as np
import pytest

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
