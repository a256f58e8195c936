"""Sampling and scoring: masking of the unknown token, reproducibility, exact log-probabilities."""
import math

import numpy as np
import pytest

from rnnlab.data.tokenize import SENTENCE_END, SENTENCE_START, UNKNOWN_TOKEN
from rnnlab.data.vocab import Vocab
from rnnlab.generate import detokenize, generate, render, sample_next, score_lines
from rnnlab.model import LanguageModel

WORDS = ["the", "cat", "sat", "on", "mat", ".", "a", "dog"]


def sentence_model(unk_bias=0.0, end_bias=0.0, seed=0):
    """A random sentence model; ``unk_bias`` makes UNKNOWN_TOKEN (ids: last) nearly certain."""
    vocab = Vocab([SENTENCE_START, SENTENCE_END, *WORDS, UNKNOWN_TOKEN])
    model = LanguageModel(len(vocab), 8, embed_size=4, seed=seed)
    model.params["decoder.bias"][vocab.unk_id] = unk_bias
    model.params["decoder.bias"][vocab.token_to_id[SENTENCE_END]] = end_bias
    return model, vocab


def test_sample_next_follows_the_distribution():
    rng = np.random.default_rng(0)
    p = np.array([0.5, 0.3, 0.15, 0.05])
    logp = np.log(np.tile(p, (20000, 1)))
    counts = np.bincount(sample_next(logp, rng), minlength=4) / 20000
    assert np.allclose(counts, p, atol=0.015)
    # temperature 0.5 squares the probabilities (renormalised)
    sharp = np.bincount(sample_next(logp, rng, temperature=0.5), minlength=4) / 20000
    assert np.allclose(sharp, p**2 / (p**2).sum(), atol=0.015)
    top2 = np.bincount(sample_next(logp, rng, top_k=2), minlength=4) / 20000
    assert top2[2:].sum() == 0 and top2[0] == pytest.approx(0.5 / 0.8, abs=0.015)
    banned = np.bincount(sample_next(logp, rng, banned=[0]), minlength=4) / 20000
    assert banned[0] == 0 and banned[1] == pytest.approx(0.6, abs=0.015)
    assert sample_next(logp[:3], rng, temperature=0).tolist() == [0, 0, 0]
    with pytest.raises(ValueError):
        sample_next(logp, rng, temperature=-1)


def test_sentences_never_contain_the_unknown_token():
    model, vocab = sentence_model(unk_bias=12.0, end_bias=-3.0)  # unmasked, nearly all would be UNKNOWN_TOKEN
    p_unk = np.exp(model.step(np.array([0]), None)[0][0, vocab.unk_id])
    assert p_unk > 0.99
    texts = generate(model, vocab, "csv", n=20, seed=3, max_length=12)
    assert len(texts) == 20
    for text in texts:
        words = text.replace(".", " . ").split()
        assert set(words) <= set(WORDS)
        assert len(words) <= 12
    assert sum(len(t.split()) for t in texts) > 100
    assert not any(marker in " ".join(texts) for marker in (UNKNOWN_TOKEN, SENTENCE_START, SENTENCE_END))


def test_generation_is_reproducible_with_a_seed():
    model, vocab = sentence_model(end_bias=1.0)
    a = generate(model, vocab, "csv", n=5, seed=11)
    assert a == generate(model, vocab, "csv", n=5, seed=11)
    assert a != generate(model, vocab, "csv", n=5, seed=12)


def test_sentences_stop_at_the_end_marker_or_max_length():
    model, vocab = sentence_model(end_bias=30.0)  # ends at once
    assert generate(model, vocab, "csv", n=3, seed=0) == ["", "", ""]
    assert generate(model, vocab, "csv", n=2, seed=0, prompt="The cat") == ["the cat", "the cat"]
    model, vocab = sentence_model(end_bias=-30.0)  # never ends
    for text in generate(model, vocab, "csv", n=3, seed=0, max_length=7):
        assert len(text.replace(".", " .").split()) == 7


def test_stream_generation_continues_the_prompt():
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n"
    vocab = Vocab.build(text, unk="<unk>")
    model = LanguageModel(len(vocab), 8, embed_size=4)
    model.params["decoder.bias"][vocab.unk_id] = 12.0
    out = generate(model, vocab, "chars", prompt="First", max_length=40, seed=1)[0]
    assert out.startswith("First") and len(out) == 45 and "<unk>" not in out
    assert generate(model, vocab, "chars", prompt="First", max_length=40, seed=1)[0] == out
    assert len(generate(model, vocab, "chars", max_length=30, seed=1, n=3)) == 3


def test_rendering():
    assert render(["a", "b", "<eos>", "c", "<eos>", "<eos>", "d"], "tokens") == "a b\nc\n\nd"
    assert render(list("ab\nc"), "chars") == "ab\nc"
    assert detokenize(["i", "do", "n't", "know", ",", "it", "'s", "(", "fine", ")", "."]) == \
        "i don't know, it's (fine)."
    assert detokenize(["``", "hi", "''"]) == '" hi "'


def test_score_lines_are_exact_and_independent_of_batching():
    model, vocab = sentence_model(seed=4)
    lines = ["the cat sat on the mat .", "a dog", "", "the zebra sat ."]  # zebra: unknown
    scores = score_lines(model, vocab, lines, "text")
    for line, (logprob, count, ppl) in zip(lines, scores):
        ids = vocab.encode([SENTENCE_START, *line.split(), SENTENCE_END])
        logp, _ = model.log_probs(ids[:-1])
        expected = float(sum(logp[t, 0, ids[t + 1]] for t in range(len(ids) - 1)))
        assert logprob == pytest.approx(expected, rel=1e-5)
        assert count == len(ids) - 1
        assert ppl == pytest.approx(math.exp(-logprob / count))
        assert score_lines(model, vocab, [line], "text")[0] == pytest.approx((logprob, count, ppl), rel=1e-5)
    # csv lowercases as in training
    assert score_lines(model, vocab, ["THE CAT"], "csv")[0] == score_lines(model, vocab, ["the cat"], "csv")[0]


def test_score_stream_lines_predict_the_line_end():
    text = "ab ba\n"
    vocab = Vocab.build(text, unk="<unk>")
    model = LanguageModel(len(vocab), 6, embed_size=3, seed=2)
    (logprob, count, _), = score_lines(model, vocab, ["ab"], "chars")
    ids = vocab.encode(list("\nab\n"))
    logp, _ = model.log_probs(ids[:-1])
    assert count == 3
    assert logprob == pytest.approx(float(sum(logp[t, 0, ids[t + 1]] for t in range(3))), rel=1e-5)
