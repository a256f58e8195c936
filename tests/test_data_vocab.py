"""Vocab: the tutorial's layout, ties, unk handling, encode/decode, files."""
import json
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnlab.data.tokenize import UNKNOWN_TOKEN
from rnnlab.data.vocab import Vocab, VocabularyCappedWarning
from rnnlab.errors import DataError

TOKENS = "b a c a b d e d".split()  # a, b, d twice; c, e once; first appearances b a c d e


def test_layout_most_frequent_first_ties_by_first_appearance_unk_last():
    vocab = Vocab.build(TOKENS)
    assert vocab.id_to_token == ["b", "a", "d", "c", "e", UNKNOWN_TOKEN]
    assert vocab.counts == [2, 2, 2, 1, 1, 0]
    assert vocab.unk_id == len(vocab) - 1 == 5
    assert vocab.token_to_id == {t: i for i, t in enumerate(vocab.id_to_token)}


def test_max_size_counts_the_unk_and_folds_dropped_counts_into_it():
    vocab = Vocab.build(TOKENS, max_size=3)
    assert vocab.id_to_token == ["b", "a", UNKNOWN_TOKEN]
    assert vocab.counts == [2, 2, 4]  # d, d, c, e
    assert vocab.least_frequent() == ("a", 2)
    assert Vocab.build(TOKENS, max_size=0) == Vocab.build(TOKENS, max_size=None) == Vocab.build(TOKENS)


def test_counter_input_is_the_same_as_tokens():
    assert Vocab.build(Counter(TOKENS), 4) == Vocab.build(TOKENS, 4)


def test_ties_are_deterministic_not_alphabetical():
    vocab = Vocab.build(["zeta", "alpha", "mid", "alpha", "zeta", "mid"], 3)
    assert vocab.id_to_token == ["zeta", "alpha", UNKNOWN_TOKEN]


def test_unk_in_corpus_is_not_duplicated():
    tokens = "the <unk> cat <unk> the <unk> sat".split()
    vocab = Vocab.build(tokens, unk="<unk>")
    assert vocab.id_to_token == ["the", "cat", "sat", "<unk>"]
    assert vocab.counts == [2, 1, 1, 3]
    small = Vocab.build(tokens, 2, unk="<unk>")
    assert small.id_to_token == ["the", "<unk>"] and small.counts == [2, 5]
    with pytest.warns(VocabularyCappedWarning, match="only 4 distinct tokens: using 4 ids"):
        assert len(Vocab.build(tokens, 5, unk="<unk>")) == 4


def test_too_large_vocabulary():
    assert len(Vocab.build(TOKENS, 6)) == 6  # 5 distinct + the unknown token
    with pytest.warns(VocabularyCappedWarning, match="only 5 distinct tokens: using 6 ids"):
        assert Vocab.build(TOKENS, 7) == Vocab.build(TOKENS, 6)
    with pytest.warns(VocabularyCappedWarning, match="1000 requested .* only 5 distinct tokens: using 6 ids"):
        assert Vocab.build(TOKENS, 1000) == Vocab.build(TOKENS, 6)  # one rule, however much larger
    with pytest.raises(DataError):
        Vocab.build(TOKENS, -3)


def test_specials_take_the_first_ids():
    vocab = Vocab.build(TOKENS, 4, specials=("<pad>", "a"))
    assert vocab.id_to_token == ["<pad>", "a", "b", UNKNOWN_TOKEN]
    assert vocab.counts == [0, 2, 2, 4]
    assert vocab.least_frequent() == ("b", 2)
    with pytest.raises(DataError):
        Vocab.build(TOKENS, 2, specials=("<pad>", "a"))


def test_encode_unknown_and_decode():
    vocab = Vocab.build(TOKENS, 3)
    ids = vocab.encode(["a", "zzz", "b", "c"])
    assert ids.dtype == np.int32 and ids.tolist() == [1, 2, 0, 2]
    assert vocab.decode(ids) == ["a", UNKNOWN_TOKEN, "b", UNKNOWN_TOKEN]
    assert vocab.encode([]).shape == (0,)
    with pytest.raises(DataError, match="token id 3 is outside the vocabulary of 3"):
        vocab.decode([0, 3])
    with pytest.raises(DataError):
        vocab.decode([-1])


words = st.text(alphabet="abcdé <>_\u2028", min_size=0, max_size=5)


@settings(max_examples=100, deadline=None)
@given(corpus=st.lists(words, min_size=1, max_size=40), probe=st.lists(words, max_size=20),
       cut=st.integers(min_value=1, max_value=50))
def test_encode_decode_roundtrip(corpus, probe, cut):
    full = Vocab.build(corpus)
    assert full.decode(full.encode(corpus)) == corpus
    size = min(cut, len(set(corpus) | {UNKNOWN_TOKEN}))
    vocab = Vocab.build(corpus, size)
    assert len(vocab) == size and vocab.id_to_token[-1] == UNKNOWN_TOKEN
    expected = [t if t in vocab else UNKNOWN_TOKEN for t in probe + corpus]
    assert vocab.decode(vocab.encode(probe + corpus)) == expected
    # the kept words are the most frequent ones
    counts = Counter(corpus)
    kept = [counts[t] for t in vocab.id_to_token[:-1]]
    assert kept == sorted(kept, reverse=True)
    dropped = [c for t, c in counts.items() if t not in vocab]
    assert not kept or not dropped or min(kept) >= max(dropped)
    assert Vocab.from_json(vocab.to_json()) == vocab


def test_save_load_roundtrip(tmp_path):
    vocab = Vocab.build(["é", "a\nb", "\"q\"", "é"], specials=("<pad>",), unk="<unk>")
    path = tmp_path / "vocab.json"
    vocab.save(path)
    assert Vocab.load(path) == vocab
    assert [p.name for p in tmp_path.iterdir()] == ["vocab.json"]  # no temp file left
    vocab2 = Vocab.build(["x"])
    vocab2.save(path)  # replaces
    assert Vocab.load(path) == vocab2


@pytest.mark.parametrize("text", [
    "{not json",
    "[]",
    '{"format": "other"}',
    '{"format": "rnnlab-vocab", "version": 99, "unk": "u", "tokens": ["u"], "counts": [0]}',
    '{"format": "rnnlab-vocab", "version": 1, "unk": "u", "tokens": ["a", "u"], "counts": [1]}',
    '{"format": "rnnlab-vocab", "version": 1, "unk": "u", "tokens": ["u", "a"], "counts": [1, 1]}',
    '{"format": "rnnlab-vocab", "version": 1, "unk": "u", "tokens": ["a", "a", "u"], "counts": [1, 1, 1]}',
    '{"format": "rnnlab-vocab", "version": 1, "unk": "u", "tokens": ["a", "u"], "counts": [1, "2"]}',
])
def test_malformed_vocab_file(tmp_path, text):
    path = tmp_path / "vocab.json"
    path.write_text(text)
    with pytest.raises(DataError, match="vocab.json"):
        Vocab.load(path)


def test_missing_vocab_file(tmp_path):
    with pytest.raises(DataError, match="no such vocabulary file"):
        Vocab.load(tmp_path / "none.json")


def test_json_is_plain(tmp_path):
    data = json.loads(Vocab.build(["a"]).to_json())
    assert data["tokens"] == ["a", UNKNOWN_TOKEN] and data["counts"] == [1, 0]
