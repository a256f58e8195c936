"""The data pipeline: reading corpora, the tutorial's tokenization, vocabularies,
id arrays on disk, batches and named corpora.

Only ``tokenize`` needs NLTK (imported when first used); the rest needs numpy.
"""
from .batching import batchify, num_stream_chunks, sentence_batches, stream_chunks
from .corpora import CORPORA, cache_dir, download, find_corpus, sha256_of
from .prepare import (
    FORMATS,
    Corpus,
    getSentenceData,
    load_prepared,
    prepare_corpus,
    save_prepared,
    split_corpus,
    tutorial_sentences,
)
from .readers import (
    TruncatedCorpusWarning,
    iter_raw_lines,
    iter_text,
    read_chars,
    read_lines,
    read_reddit_csv,
    read_tokens,
)
from .tokenize import (
    SENTENCE_END,
    SENTENCE_START,
    UNKNOWN_TOKEN,
    comment_sentences,
    line_sentence,
    split_sentences,
    word_tokenize,
)
from .vocab import Vocab

__all__ = [
    "CORPORA", "FORMATS", "SENTENCE_END", "SENTENCE_START", "UNKNOWN_TOKEN",
    "Corpus", "TruncatedCorpusWarning", "Vocab",
    "batchify", "cache_dir", "comment_sentences", "download", "find_corpus", "getSentenceData",
    "iter_raw_lines", "iter_text", "line_sentence", "load_prepared", "num_stream_chunks",
    "prepare_corpus", "read_chars", "read_lines", "read_reddit_csv", "read_tokens",
    "save_prepared", "sentence_batches", "sha256_of", "split_corpus", "split_sentences",
    "stream_chunks", "tutorial_sentences", "word_tokenize",
]
