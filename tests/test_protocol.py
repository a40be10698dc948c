"""The exit detector against the plain rule, over arbitrary bytes cut arbitrarily."""

from __future__ import annotations

import tracemalloc
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.streams import split
from trio_echo import bytesearch
from trio_echo.protocol import ExitDetector, is_exit_line

# Bytes rich in the characters that matter, so that exit lines actually occur.
interesting = st.lists(
    st.sampled_from(
        [b"exit", b"e", b"x", b"i", b"t", b" ", b"\t", b"\r", b"\n", b"\r\n", b"EXIT", b"a"]
    )
    | st.binary(max_size=6),
    max_size=40,
).map(b"".join)


def model(data: bytes, *, at_end: bool) -> int | None:
    """Where the stream is cut: just after the first exit line, by the plain rule."""
    start = 0
    while True:
        newline = data.find(b"\n", start)
        if newline < 0:
            if at_end and start < len(data) and is_exit_line(data[start:]):
                return len(data)
            return None
        if is_exit_line(data[start : newline + 1]):
            return newline + 1
        start = newline + 1


def run_detector(pieces: Sequence[bytes | bytearray]) -> tuple[int | None, bool]:
    """Feed pieces; return the absolute cut position (or None) and end-of-input verdict."""
    detector = ExitDetector()
    offset = 0
    for piece in pieces:
        cut = detector.feed(piece)
        if cut is not None:
            return offset + cut, True
        offset += len(piece)
    return None, detector.end_of_input()


@settings(max_examples=1000)  # pure and fast: search harder
@given(data=interesting, cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=12))
def test_detector_cuts_where_the_rule_says(data: bytes, cuts: list[int]) -> None:
    cut, _ = run_detector(split(data, cuts))
    assert cut == model(data, at_end=False)


@given(data=interesting, cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=12))
def test_end_of_input_counts_a_final_exit_line(data: bytes, cuts: list[int]) -> None:
    _, exited = run_detector(split(data, cuts))
    assert exited == (model(data, at_end=True) is not None)


@given(data=st.binary(max_size=300), cuts=st.lists(st.integers(0, 300), max_size=8))
def test_arbitrary_binary_agrees_with_the_rule(data: bytes, cuts: list[int]) -> None:
    cut, exited = run_detector(split(data, cuts))
    assert cut == model(data, at_end=False)
    assert exited == (model(data, at_end=True) is not None)


# Lines of text around the interesting bytes, so that pieces are large enough for memmem.
LINES = b"text with e, x, i and t in it, and exit inside a line\n" * (bytesearch.LARGE // 50)


@given(
    data=interesting,
    before=st.integers(0, 2),
    cuts=st.lists(st.integers(0, 4 * len(LINES)), max_size=4),
    mutable=st.booleans(),
)
def test_large_pieces_agree_with_the_rule(
    data: bytes, before: int, cuts: list[int], mutable: bool
) -> None:
    whole = LINES * before + data + LINES
    pieces = split(whole, cuts)
    cut, exited = run_detector([bytearray(p) for p in pieces] if mutable else pieces)
    assert cut == model(whole, at_end=False)
    assert exited == (model(whole, at_end=True) is not None)


@pytest.mark.parametrize(
    ("pieces", "cut"),
    [
        ([b"exit\n"], 5),
        ([b"ex", b"it\n"], 5),
        ([b"exit\r", b"\n"], 6),
        ([b"  exit \t\r\n"], 10),
        ([b"hello\nexit\nafter\n"], 11),
        ([b"hello\ne", b"x", b"i", b"t", b" ", b"\n", b"more"], 12),
        ([b"exited\n", b"not exit\n", b"EXIT\n", b"exit now\n"], None),
        ([b"exit\r\r\n"], None),
        ([b"exit\r \n"], None),
        ([b"\rexit\n"], None),
        # A line already lost before the piece, then an `exit` line after it (the fast
        # path for lost lines must start judging at the newline, not at the piece's start).
        ([b"xyz", b"exit\nexit\n"], 13),
        ([b"xyz", b"exit\nno exit\n"], None),
    ],
)
def test_examples_from_the_issue(pieces: list[bytes], cut: int | None) -> None:
    found, _ = run_detector(pieces)
    assert found == cut


@pytest.mark.parametrize(
    ("data", "exited"),
    [(b"hello\nexit", True), (b"exit\r", True), (b" exit ", True), (b"exi", False), (b"", False)],
)
def test_final_line_without_newline(data: bytes, exited: bool) -> None:
    assert run_detector([data]) == (None, exited)


def test_feeding_after_it_fired_is_refused() -> None:
    detector = ExitDetector()
    assert detector.feed(b"exit\n") == 5
    with pytest.raises(RuntimeError):
        detector.feed(b"more")


def test_a_long_line_costs_no_memory() -> None:
    """16 MiB without a newline (and an `exit` prefix that keeps the matcher busy) must
    not make the detector hold on to anything."""
    detector = ExitDetector()
    chunk = b"x" * 1024
    tracemalloc.start()
    try:
        detector.feed(b"exit")
        for _ in range(8 * 1024):
            assert detector.feed(b" " * 1024) is None
        for _ in range(8 * 1024):
            assert detector.feed(chunk) is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024
    assert detector.feed(b"\nexit\n") == 6
