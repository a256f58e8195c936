"""The data pipeline: reading corpora, the tutorial's tokenization, vocabularies,
id arrays on disk, batches and named corpora.

Only ``tokenize`` needs NLTK (imported when first used); the rest needs numpy.
"""
from .batching import batchify, num_stream_chunks, sentence_batches, stream_chunks
from .cache import (
    OpenedCorpus,
    SourceRecord,
    check_same_source,
    corpus_cache_dir,
    file_sha256,
    open_corpus,
    prepare_folder,
    source_record,
    vocab_sha256,
)
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
    write_prepared,
)
from .readers import (
    TruncatedCorpusWarning,
    iter_line_blocks,
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
    "Corpus", "OpenedCorpus", "SourceRecord", "TruncatedCorpusWarning", "Vocab",
    "batchify", "cache_dir", "check_same_source", "comment_sentences", "corpus_cache_dir", "download",
    "file_sha256", "find_corpus", "getSentenceData", "iter_line_blocks", "iter_raw_lines", "iter_text",
    "line_sentence", "load_prepared", "num_stream_chunks", "open_corpus", "prepare_corpus", "prepare_folder",
    "read_chars", "read_lines", "read_reddit_csv", "read_tokens", "save_prepared", "sentence_batches",
    "sha256_of", "source_record", "split_corpus", "split_sentences", "stream_chunks", "tutorial_sentences",
    "vocab_sha256", "word_tokenize", "write_prepared",
]
