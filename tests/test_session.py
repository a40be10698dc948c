"""The client's session rule (`SessionTracker`), sans-IO: no socket, no clock, no task."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from tests.streams import split
from trio_echo.session import CLEAN_ENDS, EchoCheck, SessionTracker

EXIT, CLOSE = 2.0, 10.0


def tracker(half_close: bool = True) -> SessionTracker:
    return SessionTracker(half_close=half_close, exit_timeout=EXIT, close_timeout=CLOSE, now=0.0)


# A session as the pumps report it: (what, size, seconds since the step before).
steps = st.lists(
    st.tuples(
        st.sampled_from(["send", "receive", "exit", "eof"]),
        st.integers(1, 5000),
        st.floats(0, 30, allow_nan=False),
    ),
    max_size=30,
)


@given(steps)
def test_the_deadline_is_the_model_s(script: list[tuple[str, int, float]]) -> None:
    """Owed nothing: no deadline. Owed something: the patience of the debt (exit: the exit
    timeout; end of input or bytes not yet back: the close timeout), counted from the later
    of the last byte heard and the moment the debt began."""
    session = tracker()
    now, offered, received, ended, since = 0.0, 0, 0, None, 0.0
    for what, size, later in script:
        if session.expire(now):
            break
        now += later
        if what == "send" and ended is None:
            if offered <= received:
                since = now
            session.offering(size, now)
            session.sent(size)
            offered += size
        elif what == "receive" and received < offered:
            size = min(size, offered - received)
            session.received(size, now)
            received, since = received + size, now
        elif what in ("exit", "eof") and ended is None:
            session.input_ended(what, now)  # type: ignore[arg-type]
            ended, since = what, now
        owed = ended is not None or offered > received
        patience = EXIT if ended == "exit" else CLOSE
        expected = since + patience if owed else math.inf
        assert session.deadline() == expected
        assert session.owed() == offered - received
        if owed:
            assert not session.expire(expected - 1e-6)
            assert session.gave_up is None


def test_an_idle_session_owes_nothing_however_long() -> None:
    session = tracker()
    session.offering(5, now=1.0)
    session.sent(5)
    session.received(5, now=1.1)
    assert session.deadline() == math.inf
    assert not session.expire(1e9)


def test_the_wait_for_a_close_starts_when_the_input_ends_not_at_the_last_byte() -> None:
    """A session idle for a minute, then the end of input: the server has its full close
    timeout to close (a watchdog counting from the last byte heard gave up at once)."""
    session = tracker()
    session.offering(6, now=0.0)
    session.sent(6)
    session.received(6, now=0.1)
    session.input_ended("eof", now=60.0)
    assert not session.expire(60.0 + CLOSE - 0.01)
    assert session.expire(60.0 + CLOSE)
    assert session.outcome() == "no_close"
    assert session.outcome() in CLEAN_ENDS


def test_bytes_that_never_come_back_stall_the_session() -> None:
    session = tracker()
    session.offering(100, now=3.0)
    session.sent(100)
    session.received(40, now=4.0)
    assert session.deadline() == 4.0 + CLOSE
    assert session.expire(4.0 + CLOSE)
    assert session.outcome() == "stalled"
    assert session.owed() == 60


@given(st.sampled_from(["exit", "eof"]), st.integers(0, 100), st.integers(0, 100))
def test_how_it_ended(how: str, sent: int, back: int) -> None:
    session = tracker()
    session.input_ended(how, now=0.0)  # type: ignore[arg-type]
    if sent:
        session.offering(sent, now=0.0)
        session.sent(sent)
    if back:
        session.received(back, now=0.0)
    session.server_closed()
    assert session.outcome() == (how if back == sent else "echo_mismatch")


def test_the_server_closing_while_input_goes_on() -> None:
    session = tracker()
    session.offering(3, now=0.0)
    session.sent(3)
    session.received(3, now=0.0)
    session.server_closed()
    assert session.outcome() == "server_closed"
    assert session.outcome() not in CLEAN_ENDS


def test_without_a_half_close_the_session_is_complete_when_all_came_back() -> None:
    session = tracker(half_close=False)
    session.offering(10, now=0.0)
    session.sent(10)
    session.input_ended("eof", now=0.0)
    assert not session.complete
    session.received(10, now=0.1)
    assert session.complete
    assert tracker(half_close=True).complete is False


@given(
    sent=st.lists(st.binary(min_size=1, max_size=50), min_size=1, max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
    change=st.integers(min_value=0),
)
def test_the_echo_check_finds_the_first_byte_that_differs_however_the_reads_fall(
    sent: list[bytes], cuts: list[int], change: int
) -> None:
    whole = b"".join(sent)
    exact, changed = EchoCheck(), EchoCheck()
    for piece in sent:
        exact.sent(piece)
        changed.sent(piece)
    at = change % len(whole)
    wrong = whole[:at] + bytes([whole[at] ^ 0xFF]) + whole[at + 1 :]
    for piece in split(whole, cuts):
        exact.received(piece)
    for piece in split(wrong, cuts):
        changed.received(piece)
    assert (exact.mismatch, changed.mismatch) == (None, at)


def test_an_echo_longer_than_what_was_sent_differs_where_it_goes_on() -> None:
    check = EchoCheck()
    check.sent(b"abc")
    check.received(b"abcd")
    assert check.mismatch == 3
