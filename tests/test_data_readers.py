"""Streaming readers: the Reddit CSV, plain lines, word_language_model tokens, characters."""
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnnlab.data.readers import (
    TruncatedCorpusWarning,
    iter_raw_lines,
    iter_text,
    read_chars,
    read_lines,
    read_reddit_csv,
    read_tokens,
)
from rnnlab.errors import DataError

REDDIT = "reddit-comments-2015-08-sample.csv"


def write(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def read_all_no_warning(path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return list(read_reddit_csv(path))


# -- Reddit CSV ------------------------------------------------------------------------


def test_reddit_sample_is_cut_mid_record_and_warns(data_dir):
    with pytest.warns(TruncatedCorpusWarning, match=r"read 211 complete records; the last record was cut"):
        bodies = list(read_reddit_csv(data_dir / REDDIT))
    assert len(bodies) == 211 > 100
    assert bodies[0].startswith("I joined a new league this year")
    # The second comment holds a "" escape: it reads as one quote character.
    assert 'say "nah, you know what, here\'s your gun anyway."' in bodies[1]
    assert '""' not in bodies[1]
    # The cut record is not among the bodies: the file's last text is in none of them.
    assert not any("### Gameplay" in b for b in bodies)


def test_escapes_multiline_and_crlf_survive_exactly(tmp_path):
    data = (b'body\r\n'
            b'"He said ""hi"", then left."\r\n'
            b'"first line\r\n\r\nthird line, with comma"\r\n'
            b'plain unquoted\r\n'
            b'\r\n'
            b'"caf\xc3\xa9 \xe2\x80\xa8 sep"\n')
    path = write(tmp_path, "c.csv", data)
    assert read_all_no_warning(path) == [
        'He said "hi", then left.',
        "first line\r\n\r\nthird line, with comma",
        "plain unquoted",
        "caf\u00e9 \u2028 sep",
    ]


def test_body_column_found_among_others(tmp_path):
    path = write(tmp_path, "c.csv", b'id,body,score\n1,"a, b",3\n2,c,4\n')
    assert read_all_no_warning(path) == ["a, b", "c"]


def test_last_record_without_newline_is_complete(tmp_path):
    path = write(tmp_path, "c.csv", b'body\n"one"\n"two"')
    assert read_all_no_warning(path) == ["one", "two"]


def test_truncated_small_file_yields_complete_records(tmp_path):
    path = write(tmp_path, "c.csv", b'body\n"one"\n"two\nlines"\n"thr')
    with pytest.warns(TruncatedCorpusWarning, match="read 2 complete records"):
        assert list(read_reddit_csv(path)) == ["one", "two\nlines"]


def test_truncated_right_after_a_newline_inside_quotes(tmp_path):
    path = write(tmp_path, "c.csv", b'body\n"one"\n"two\n')
    with pytest.warns(TruncatedCorpusWarning, match="read 1 complete records"):
        assert list(read_reddit_csv(path)) == ["one"]


def test_missing_body_column_names_the_columns(tmp_path):
    path = write(tmp_path, "c.csv", b"text,score\nhello,1\n")
    with pytest.raises(DataError, match=r"no 'body' column; columns found: 'text', 'score'"):
        list(read_reddit_csv(path))


def test_empty_csv(tmp_path):
    with pytest.raises(DataError, match="no header row"):
        list(read_reddit_csv(write(tmp_path, "c.csv", b"")))


# -- decoding errors --------------------------------------------------------------------


def test_invalid_utf8_names_file_and_byte_offset(tmp_path):
    data = b'body\n"ok"\n"caf\xc3\xa9 and \xff bad"\n'
    path = write(tmp_path, "bad.csv", data)
    offset = data.index(b"\xff")
    with pytest.raises(DataError, match=rf"bad\.csv: invalid UTF-8 at byte offset {offset}\b"):
        list(read_reddit_csv(path))


@pytest.mark.parametrize("chunk", [1, 2, 3, 4, 5, 7, 64])
def test_invalid_utf8_offset_across_chunk_boundaries(tmp_path, chunk):
    # Ten two-byte characters, then a lead byte followed by a non-continuation byte.
    data = "é".encode() * 10 + b"\xc3\x28 tail"
    path = write(tmp_path, "t.txt", data)
    with pytest.raises(DataError, match=r"invalid UTF-8 at byte offset 20\b"):
        list(iter_text(path, chunk_bytes=chunk))


def test_truncated_multibyte_character_at_eof(tmp_path):
    path = write(tmp_path, "t.txt", b"abc\xe2\x82")
    with pytest.raises(DataError, match=r"invalid UTF-8 at byte offset 3\b"):
        read_chars(path)


def test_offset_counts_a_skipped_bom(tmp_path):
    path = write(tmp_path, "t.txt", b"\xef\xbb\xbfab\xff")
    with pytest.raises(DataError, match=r"byte offset 5\b"):
        read_chars(path)
    assert read_chars(write(tmp_path, "ok.txt", b"\xef\xbb\xbfab")) == "ab"


def test_binary_file_looks_binary(tmp_path):
    path = write(tmp_path, "x.bin", b"PK\x03\x04\x00\x00\x08\x00")
    for reader in (read_chars, lambda p: list(read_lines(p)), lambda p: list(read_reddit_csv(p))):
        with pytest.raises(DataError, match=r"x\.bin: looks binary \(NUL byte at byte offset 4\)"):
            reader(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.txt: no such file"):
        list(read_tokens(tmp_path / "nope.txt"))
    with pytest.raises(DataError, match="is a folder"):
        read_chars(tmp_path)


# -- lines, tokens, characters -----------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet="ab é\r\n\u2028\x85", max_size=40), chunk=st.integers(1, 9))
def test_raw_lines_match_python_newline_empty(tmp_path, text, chunk):
    path = tmp_path / "lines.txt"
    path.write_bytes(text.encode())
    with open(path, encoding="utf-8", newline="") as f:
        expected = list(f)
    assert list(iter_raw_lines(path, chunk_bytes=chunk)) == expected


def test_read_lines_skips_blank_lines(tmp_path):
    path = write(tmp_path, "t.txt", b"first line\r\n\n   \nsecond\rthird  \n")
    assert list(read_lines(path)) == ["first line", "second", "third"]


def test_read_tokens_matches_word_language_model_on_wikitext(data_dir):
    path = data_dir / "wikitext-2-valid.txt"
    with open(path, encoding="utf8") as f:
        expected = [line.split() + ["<eos>"] for line in f]
    got = list(read_tokens(path))
    assert got == expected
    assert ["<eos>"] in got  # WikiText's blank lines stay, as just <eos>
    assert any("<unk>" in line for line in got)
    assert sum(map(len, got)) == 217646  # the WikiText-2 validation size PyTorch reports


def test_read_tokens_keeps_empty_lines(tmp_path):
    path = write(tmp_path, "t.txt", b"a <unk> b\n\n \nc")
    assert list(read_tokens(path)) == [["a", "<unk>", "b", "<eos>"], ["<eos>"], ["<eos>"], ["c", "<eos>"]]


def test_read_chars_is_the_whole_text(data_dir):
    path = data_dir / "tinyshakespeare.txt"
    text = read_chars(path)
    assert len(text) == 1115394
    assert text == path.read_text(encoding="utf-8")
    assert text.startswith("First Citizen:\n")


def test_read_chars_universal_newlines(tmp_path):
    assert read_chars(write(tmp_path, "t.txt", b"a\r\nb\rc\n")) == "a\nb\nc\n"
