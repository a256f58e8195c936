"""The tutorial's preprocessing, offline (untrained Punkt + Treebank)."""
import csv
import itertools
import sys

import numpy as np
import pytest

from rnnlab.data import tokenize
from rnnlab.data.prepare import getSentenceData, tutorial_sentences
from rnnlab.data.vocab import VocabularyCappedWarning
from rnnlab.data.tokenize import (
    SENTENCE_END,
    SENTENCE_START,
    UNKNOWN_TOKEN,
    comment_sentences,
    line_sentence,
)
from rnnlab.errors import RnnlabError

REDDIT = "reddit-comments-2015-08-sample.csv"
S, E = SENTENCE_START, SENTENCE_END


@pytest.fixture
def no_download(monkeypatch):
    """Fail if anything reaches for the punkt model."""
    import nltk

    def refuse(*args, **kwargs):
        raise AssertionError("the punkt model must not be used")

    monkeypatch.setattr(nltk, "download", refuse)
    monkeypatch.setattr(nltk, "sent_tokenize", refuse)
    monkeypatch.setattr(nltk.tokenize, "sent_tokenize", refuse)


def test_comment_sentences_exact(no_download):
    comment = 'I can\'t go. Really? "Yes," she said (twice). Ok'
    assert comment_sentences(comment) == [
        [S, "i", "ca", "n't", "go", ".", E],
        [S, "really", "?", E],
        [S, "``", "yes", ",", "''", "she", "said", "(", "twice", ")", ".", E],
        # "Ok" -> [S, ok, E]: 3 tokens, dropped
    ]


def test_final_period_is_split_even_with_markers():
    # Tokenizing "SENTENCE_START hello world. SENTENCE_END" with Treebank alone would keep "world.".
    assert comment_sentences("Hello world.") == [[S, "hello", "world", ".", E]]


def test_line_sentence_keeps_case():
    assert line_sentence("First Citizen: Speak, speak.") == [S, "First", "Citizen", ":", "Speak", ",", "speak", ".", E]


def test_missing_nltk_names_the_extra(monkeypatch):
    tokenize._sentence_splitter.cache_clear()
    tokenize._word_splitter.cache_clear()
    for name in ("nltk", "nltk.tokenize", "nltk.tokenize.punkt"):
        monkeypatch.setitem(sys.modules, name, None)
    try:
        with pytest.raises(RnnlabError, match=r"pip install 'rnnlab\[cli\]'"):
            comment_sentences("Hello there world.")
    finally:
        tokenize._sentence_splitter.cache_clear()
        tokenize._word_splitter.cache_clear()


def reference_tutorial(path, vocabulary_size):
    """The tutorial's getSentenceData, with the untrained Punkt + Treebank swapped in
    for sent_tokenize/word_tokenize, and the header and cut last record left out."""
    import nltk
    from nltk.tokenize import TreebankWordTokenizer
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    punkt, treebank = PunktSentenceTokenizer(), TreebankWordTokenizer()
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, skipinitialspace=True))[1:-1]
    sentences = list(itertools.chain(*[punkt.tokenize(x[0].lower()) for x in rows]))
    tokenized = [[S] + treebank.tokenize(s) + [E] for s in sentences]
    parsed = len(tokenized)
    tokenized = list(filter(lambda x: len(x) > 3, tokenized))
    word_freq = nltk.FreqDist(itertools.chain(*tokenized))
    vocab = word_freq.most_common(vocabulary_size - 1)
    index_to_word = [x[0] for x in vocab] + [UNKNOWN_TOKEN]
    word_to_index = {w: i for i, w in enumerate(index_to_word)}
    tokenized = [[w if w in word_to_index else UNKNOWN_TOKEN for w in s] for s in tokenized]
    X = [[word_to_index[w] for w in s[:-1]] for s in tokenized]
    y = [[word_to_index[w] for w in s[1:]] for s in tokenized]
    return parsed, len(word_freq), vocab[-1], index_to_word, X, y


@pytest.mark.filterwarnings("ignore::rnnlab.data.readers.TruncatedCorpusWarning")
def test_tutorial_loader_on_the_reddit_sample(data_dir, capsys, no_download):
    path = data_dir / REDDIT
    X, y, vocab = tutorial_sentences(path, 2000)
    parsed, unique, (least, least_count), index_to_word, X_ref, y_ref = reference_tutorial(path, 2000)

    assert capsys.readouterr().out.splitlines() == [
        "Reading CSV file...",
        "Parsed %d sentences." % parsed,
        "Found %d unique words tokens." % unique,
        "Using vocabulary size 2000.",
        "The least frequent word in our vocabulary is '%s' and appeared %d times." % (least, least_count),
    ]
    assert vocab.id_to_token == index_to_word  # same ids, ties included, UNKNOWN_TOKEN last
    assert vocab.id_to_token[-1] == UNKNOWN_TOKEN and len(vocab) == 2000
    assert [x.tolist() for x in X] == X_ref and [t.tolist() for t in y] == y_ref
    assert len(X) > 1000 and X.dtype == object and X[0].dtype == np.int32

    start, end = vocab.token_to_id[S], vocab.token_to_id[E]
    for x, t in zip(X, y):
        assert len(x) == len(t) >= 3  # sentences of more than 3 tokens
        assert x[0] == start and t[-1] == end
        assert np.array_equal(x[1:], t[:-1])


@pytest.mark.filterwarnings("ignore::rnnlab.data.readers.TruncatedCorpusWarning")
def test_tutorial_quiet_and_classic_api(data_dir, capsys):
    X, y, vocab = tutorial_sentences(data_dir / REDDIT, 500, verbose=False)
    assert capsys.readouterr().out == ""
    X2, y2 = getSentenceData(data_dir / REDDIT, 500)
    assert "Using vocabulary size 500." in capsys.readouterr().out
    assert all(np.array_equal(a, b) for a, b in zip(X, X2)) and len(y2) == len(y)


@pytest.mark.filterwarnings("ignore::rnnlab.data.readers.TruncatedCorpusWarning")
def test_tutorial_default_size_is_capped_on_the_sample(data_dir, capsys):
    # The sample has fewer distinct words than the tutorial's 8000: all are kept, with a warning.
    with pytest.warns(VocabularyCappedWarning, match="vocabulary of 8000 requested"):
        X, y = getSentenceData(data_dir / REDDIT, 8000)
    size = int(capsys.readouterr().out.split("Using vocabulary size ")[1].split(".")[0])
    assert 1000 < size < 8000
    assert max(int(s.max()) for s in y) < size
