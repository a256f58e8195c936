"""Batches: word_language_model's stream layout, and padded sentence batches."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnlab.data.batching import batchify, num_stream_chunks, sentence_batches, stream_chunks
from rnnlab.errors import DataError


def test_batchify_layout_columns_are_contiguous_streams():
    ids = np.arange(26)
    batched = batchify(ids, 4)
    assert batched.shape == (6, 4)
    assert batched[0].tolist() == [0, 6, 12, 18]
    for j in range(4):
        assert batched[:, j].tolist() == list(range(6 * j, 6 * j + 6))  # 24, 25 dropped


def test_batchify_is_a_view_of_a_memmap(tmp_path):
    path = tmp_path / "ids.npy"
    np.save(path, np.arange(100, dtype=np.int32))
    ids = np.load(path, mmap_mode="r")
    batched = batchify(ids, 5)
    assert np.shares_memory(batched, ids)
    assert batched[:, 1].tolist() == list(range(20, 40))


def test_batchify_too_short():
    with pytest.raises(DataError, match="too short for batch size 4"):
        batchify(np.arange(7), 4)


def test_stream_chunks_shapes_and_shift():
    batched = batchify(np.arange(26), 4)
    chunks = list(stream_chunks(batched, 2))
    assert [x.shape for x, _ in chunks] == [(2, 4), (2, 4), (1, 4)]
    assert len(chunks) == num_stream_chunks(batched, 2)
    assert chunks[0][0].tolist() == [[0, 6, 12, 18], [1, 7, 13, 19]]
    assert chunks[0][1].tolist() == [[1, 7, 13, 19], [2, 8, 14, 20]]
    assert chunks[2][0].tolist() == [[4, 10, 16, 22]] and chunks[2][1].tolist() == [[5, 11, 17, 23]]
    # Inputs cover every row but the last once; targets every row but the first.
    assert np.array_equal(np.concatenate([x for x, _ in chunks]), batched[:-1])
    assert np.array_equal(np.concatenate([t for _, t in chunks]), batched[1:])


@pytest.mark.peer
def test_batchify_and_get_batch_match_word_language_model():
    torch = pytest.importorskip("torch")

    # PyTorch examples, word_language_model/main.py
    def batchify_torch(data, bsz):
        nbatch = data.size(0) // bsz
        data = data.narrow(0, 0, nbatch * bsz)
        return data.view(bsz, -1).t().contiguous()

    def get_batch(source, i, bptt):
        seq_len = min(bptt, len(source) - 1 - i)
        return source[i:i + seq_len], source[i + 1:i + 1 + seq_len].reshape(-1)

    ids = np.random.default_rng(0).integers(0, 50, size=1003)
    ref = batchify_torch(torch.from_numpy(ids), 7)
    ours = batchify(ids, 7)
    assert np.array_equal(ref.numpy(), ours)
    ref_batches = [get_batch(ref, i, 35) for i in range(0, ref.size(0) - 1, 35)]
    our_batches = list(stream_chunks(ours, 35))
    assert len(ref_batches) == len(our_batches)
    for (rd, rt), (od, ot) in zip(ref_batches, our_batches):
        assert np.array_equal(rd.numpy(), od) and np.array_equal(rt.numpy(), ot.reshape(-1))


def sentences_of(lengths):
    start, out = 1, []
    for n in lengths:
        out.append(np.arange(start, start + n, dtype=np.int32))
        start += n
    return out


def test_sentence_batch_example_from_the_module_docstring():
    s1, s2, s3 = np.array([1, 2, 3, 9]), np.array([1, 4, 9]), np.array([1, 5, 6, 7, 9])
    batches = list(sentence_batches([s1, s2, s3], 2, pad_id=0))
    inputs, targets, mask = batches[0]
    assert inputs.tolist() == [[1, 1], [4, 2], [0, 3]]
    assert targets.tolist() == [[4, 2], [9, 3], [0, 9]]
    assert mask.tolist() == [[1, 1], [1, 1], [0, 1]] and mask.dtype == np.float32
    inputs, targets, mask = batches[1]
    assert inputs[:, 0].tolist() == [1, 5, 6, 7] and mask.shape == (4, 1) and mask.all()


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(0, 12), min_size=1, max_size=30), batch_size=st.integers(1, 8),
       seed=st.one_of(st.none(), st.integers(0, 2**32 - 1)))
def test_padding_mask_is_zero_exactly_on_padding(lengths, batch_size, seed):
    sentences = sentences_of(lengths)
    rng = None if seed is None else np.random.default_rng(seed)
    seen = []
    for inputs, targets, mask in sentence_batches(sentences, batch_size, shuffle_rng=rng, pad_id=-1):
        assert inputs.shape == targets.shape == mask.shape and inputs.shape[1] <= batch_size
        for col in range(inputs.shape[1]):
            real = int(mask[:, col].sum())
            assert mask[:real, col].tolist() == [1.0] * real  # ones first, then only zeros
            assert (inputs[real:, col] == -1).all() and (targets[real:, col] == -1).all()
            assert (inputs[:real, col] != -1).all()
            # the sentence's ids come back whole: inputs s[:-1], targets s[1:]
            sentence = np.append(inputs[:real, col], targets[real - 1, col])
            assert np.array_equal(sentence[1:], targets[:real, col])
            seen.append(sentence.tolist())
        assert mask[:, mask.sum(axis=0).argmax()].all()  # T is the longest sentence of the batch, minus one
    expected = [s.tolist() for s in sentences if len(s) >= 2]
    assert sorted(seen) == sorted(expected)  # every sentence with a target, once


def test_batches_group_similar_lengths_and_shuffle_is_reproducible():
    lengths = [5, 2, 9, 3, 9, 4, 2, 7]
    sentences = sentences_of(lengths)
    plain = [m.sum(axis=0).astype(int).tolist() for _, _, m in sentence_batches(sentences, 3)]
    assert plain == [[1, 1, 2], [3, 4, 6], [8, 8]]  # sorted lengths minus one, cut into threes
    shuffled = [m.sum(axis=0).astype(int).tolist()
                for _, _, m in sentence_batches(sentences, 3, shuffle_rng=np.random.default_rng(3))]
    again = [m.sum(axis=0).astype(int).tolist()
             for _, _, m in sentence_batches(sentences, 3, shuffle_rng=np.random.default_rng(3))]
    assert shuffled == again and sorted(shuffled) == sorted(plain)


def test_batch_size_one_keeps_corpus_order():
    sentences = sentences_of([6, 3, 9, 4, 4, 2])
    got = [(x[:, 0].tolist(), t[:, 0].tolist(), m.all()) for x, t, m in sentence_batches(sentences, 1)]
    assert got == [(s[:-1].tolist(), s[1:].tolist(), True) for s in sentences]
