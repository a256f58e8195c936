"""The tutorial's text preprocessing, offline.

The tutorial lowercases each Reddit comment, splits it into sentences with
``nltk.sent_tokenize``, wraps each sentence in ``SENTENCE_START ... SENTENCE_END``,
word-tokenizes it and drops sentences of 3 tokens or fewer (markers included).

``sent_tokenize`` needs the downloadable punkt model, which is not available
here, so sentences are split by NLTK's *untrained* ``PunktSentenceTokenizer()``
(it splits after ``.``, ``?`` and ``!`` followed by whitespace and knows no
abbreviations) and words by ``TreebankWordTokenizer``. The markers are added
after word tokenization rather than inside the string: the Treebank tokenizer
splits off only a string-final period, so a marker after the sentence would
leave "word." glued together.

NLTK is imported lazily, so the engine works without it.
"""
from __future__ import annotations

import functools
from typing import Iterable, Iterator

from ..errors import RnnlabError

SENTENCE_START = "SENTENCE_START"
SENTENCE_END = "SENTENCE_END"
UNKNOWN_TOKEN = "UNKNOWN_TOKEN"

#: Sentences of this many tokens or fewer (markers included) are dropped.
MIN_TOKENS_EXCLUSIVE = 3


def _nltk_tokenize():
    try:
        from nltk.tokenize import TreebankWordTokenizer
        from nltk.tokenize.punkt import PunktSentenceTokenizer
    except ImportError:
        raise RnnlabError(
            "the text pipeline needs NLTK, which is not installed: pip install 'rnnlab[cli]'"
        ) from None
    return PunktSentenceTokenizer, TreebankWordTokenizer


@functools.lru_cache(maxsize=1)
def _sentence_splitter():
    punkt, _ = _nltk_tokenize()
    return punkt()  # untrained: never nltk.download, never sent_tokenize


@functools.lru_cache(maxsize=1)
def _word_splitter():
    _, treebank = _nltk_tokenize()
    return treebank()


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` by the untrained Punkt sentence splitter."""
    return _sentence_splitter().tokenize(text)


def word_tokenize(sentence: str) -> list[str]:
    """Words and punctuation of one sentence by the Treebank tokenizer."""
    return _word_splitter().tokenize(sentence)


def wrap(tokens: list[str]) -> list[str]:
    """``[SENTENCE_START, *tokens, SENTENCE_END]``."""
    return [SENTENCE_START, *tokens, SENTENCE_END]


def comment_sentences(comment: str) -> list[list[str]]:
    """One comment, as the tutorial preprocesses it: a list of token lists.

    Lowercased, split into sentences, word-tokenized, wrapped in the markers;
    sentences of ``MIN_TOKENS_EXCLUSIVE`` tokens or fewer are dropped.
    """
    return [s for s in raw_comment_sentences(comment) if len(s) > MIN_TOKENS_EXCLUSIVE]


def raw_comment_sentences(comment: str) -> list[list[str]]:
    """Like ``comment_sentences`` but keeping the short sentences (the tutorial's
    "Parsed %d sentences." counts them)."""
    return [wrap(word_tokenize(s)) for s in split_sentences(comment.lower())]


def tutorial_sentences_from(comments: Iterable[str]) -> Iterator[list[str]]:
    """``comment_sentences`` over many comments, flattened, in corpus order."""
    for comment in comments:
        yield from comment_sentences(comment)


def line_sentence(line: str) -> list[str]:
    """One line of plain text as one sentence: Treebank tokens (case kept), wrapped."""
    return wrap(word_tokenize(line))
