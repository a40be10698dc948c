"""`bytesearch.find` gives `bytes.find`'s answer, through memmem or without it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_echo import bytesearch

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
    assert bytesearch._memmem.cache_info().currsize == 1  # looked up: the fast path was taken
    assert bytesearch._memmem() is not None  # glibc has memmem


def test_without_memmem_it_still_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bytesearch, "_memmem", lambda: None)
    data = haystack(b"\nexit\n", 1, 1)
    assert bytesearch.find(data, b"\nexit") == data.find(b"\nexit") > 0


def test_a_bytearray_searched_stays_resizable() -> None:
    """The address of its storage is borrowed for one call only."""
    data = bytearray(haystack(b"", 2, 0))
    bytesearch.find(data, b"exit")
    data.extend(b"more")  # BufferError if an export were still held
    assert data.endswith(b"more")
