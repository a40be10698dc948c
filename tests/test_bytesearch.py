"""`bytesearch.find` gives `bytes.find`'s answer, through strstr, memmem or neither."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_echo import bytesearch, capabilities

# Text in which the needle's letters are everywhere, as in the benchmark's lines.
TEXT = b"the quick brown fox jumps over the lazy dog; exits, exist, texts\n"
needles = st.sampled_from([b"exit", b"\nexit", b"x", b"dog;", b"\x00exit", b"zzzz"])


def haystack(middle: bytes, before: int, after: int) -> bytes:
    """`middle` between large runs of text, so the search takes the large path."""
    times = bytesearch.LARGE // len(TEXT) + 1
    return TEXT * (times * before) + middle + TEXT * (times * after)


@given(
    middle=st.binary(max_size=20) | needles,
    needle=needles,
    before=st.integers(0, 2),
    after=st.integers(0, 2),
    start=st.integers(-5, 5 * bytesearch.LARGE),
    mutable=st.booleans(),
)
def test_it_agrees_with_bytes_find(
    middle: bytes, needle: bytes, before: int, after: int, start: int, mutable: bool
) -> None:
    data = haystack(middle, before, after)
    piece = bytearray(data) if mutable else data
    assert bytesearch.find(piece, needle, start) == data.find(needle, start)


def test_large_pieces_go_through_memmem_and_find_the_last_byte() -> None:
    data = haystack(b"", 2, 0)
    assert bytesearch.find(data + b"exit\n", b"exit\n") == len(data)
    assert bytesearch.find(bytearray(data) + b"exit", b"exit\n") == -1
    assert capabilities.c_search() is not None  # glibc has both


def test_text_goes_to_strstr_and_anything_with_a_nul_to_memmem(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = capabilities.c_search()
    assert real is not None
    calls: list[str] = []

    def memmem(at: int, size: int, needle: bytes, needle_size: int) -> int | None:
        calls.append("memmem")
        return real.memmem(at, size, needle, needle_size)

    def strstr(at: int, needle: bytes) -> int | None:
        calls.append("strstr")
        return real.strstr(at, needle)

    monkeypatch.setattr(bytesearch, "c_search", lambda: capabilities.CSearch(memmem, strstr))
    text = haystack(b"\nexit\n", 1, 1)
    assert bytesearch.find(text, b"\nexit") == text.find(b"\nexit") > 0
    binary = haystack(b"\0\nexit\n", 1, 1)
    assert bytesearch.find(bytearray(binary), b"\nexit") == binary.find(b"\nexit") > 0
    past_the_nul = binary.index(b"\0") + 1  # nothing but text from there on
    assert bytesearch.find(binary, b"\nexit", past_the_nul) == binary.find(b"\nexit")
    nul_after = haystack(b"\nexit\n\0", 1, 1)
    assert bytesearch.find(nul_after, b"\nexit") == nul_after.find(b"\nexit")
    assert calls == ["strstr", "memmem", "strstr", "memmem"]


def test_without_the_c_library_it_still_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bytesearch, "c_search", lambda: None)
    data = haystack(b"\nexit\n", 1, 1)
    assert bytesearch.find(data, b"\nexit") == data.find(b"\nexit") > 0


def test_a_bytearray_searched_stays_resizable() -> None:
    """The address of its storage is borrowed for one call only."""
    data = bytearray(haystack(b"", 2, 0))
    bytesearch.find(data, b"exit")
    data.extend(b"more")  # BufferError if an export were still held
    assert data.endswith(b"more")
