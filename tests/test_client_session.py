"""The client's two pumps over in-memory streams, against our handler as the peer."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import Recorder, said
from tests.streams import PAIRS, Collector, receive_all, split
from tests.test_protocol import interesting, model
from trio_echo.client import run_session
from trio_echo.events import DataReceived, DataSent, SessionEnded
from trio_echo.server import EchoServer, ServerConfig


async def session(
    pieces: list[bytes],
    *,
    pair: str = "memory",
    exit_command: bool = True,
    exit_timeout: float = 5.0,
    close_input: bool = True,
) -> tuple[bytes, str, Recorder]:
    """Run the client with `pieces` as its input against an in-process echo handler."""
    recorder = Recorder()
    stdin_send, stdin = trio.testing.memory_stream_one_way_pair()
    stdout = Collector()
    client_side, server_side = PAIRS[pair]()
    peer = EchoServer(ServerConfig(exit_command=exit_command))
    result: dict[str, str] = {}

    async def feed_input() -> None:
        for piece in pieces:
            await stdin_send.send_all(piece)
            await trio.lowlevel.checkpoint()
        if close_input:
            await stdin_send.aclose()

    async def client() -> None:
        result["reason"] = await run_session(
            client_side, stdin, stdout, emit=recorder, exit_timeout=exit_timeout
        )

    with trio.fail_after(60):
        async with client_side, server_side, trio.open_nursery() as nursery:
            nursery.start_soon(peer.handle, server_side)
            nursery.start_soon(feed_input)
            await client()
            nursery.cancel_scope.cancel()
    return bytes(stdout.data), result["reason"], recorder


@given(
    data=interesting | st.binary(max_size=500),
    cut_at=st.lists(st.integers(min_value=0, max_value=400), max_size=10),
    pair=st.sampled_from(sorted(PAIRS)),
)
async def test_output_is_the_input_up_to_the_first_exit_line(
    data: bytes, cut_at: list[int], pair: str
) -> None:
    output, reason, recorder = await session(split(data, cut_at), pair=pair)
    cut = model(data, at_end=True)
    assert output == (data if cut is None else data[:cut])
    assert reason == ("eof" if cut is None else "exit")
    [end] = recorder.of(SessionEnded)
    assert isinstance(end, SessionEnded)
    assert end.bytes_out == end.bytes_in == len(output)
    assert sum(e.bytes for e in recorder.of(DataSent)) == len(output)
    assert sum(e.bytes for e in recorder.of(DataReceived)) == len(output)


async def test_exit_against_a_plain_echo_server_ends_after_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    output, reason, _ = await session(
        [b"hi\nexit\n"], exit_command=False, exit_timeout=2.0, close_input=False
    )
    assert (output, reason) == (b"hi\nexit\n", "no_exit_reply")


async def test_server_going_away_is_noticed_while_waiting_for_input() -> None:
    """No further input ever comes; the client must still end, at once."""
    recorder = Recorder()
    stdin_send, stdin = trio.testing.memory_stream_one_way_pair()
    client_side, server_side = trio.testing.memory_stream_pair()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def server_closes() -> None:
                await server_side.send_all(b"bye\n")
                await server_side.aclose()

            nursery.start_soon(server_closes)
            stdout = Collector()
            reason = await run_session(client_side, stdin, stdout, emit=recorder)
    assert (reason, bytes(stdout.data)) == ("server_closed", b"bye\n")
    await stdin_send.aclose()  # the input was open the whole time


@pytest.mark.parametrize("pair", sorted(PAIRS))
async def test_input_end_half_closes_and_waits_for_the_whole_echo(pair: str) -> None:
    data = bytes(range(256)) * 64
    output, reason, _ = await session(split(data, [1000, 5000, 9000]), pair=pair)
    assert (output, reason) == (data, "eof")


async def run_against(peer_behaviour: str) -> tuple[str, SessionEnded]:
    """The client, its input ended, against a peer that echoes only half, or never closes."""
    recorder = Recorder()
    stdin_send, stdin = trio.testing.memory_stream_one_way_pair()
    client_side, server_side = trio.testing.memory_stream_pair()
    await stdin_send.send_all(b"0123456789\n")
    await stdin_send.aclose()

    async def peer() -> None:
        data = await receive_all(server_side, [100])
        keep = data[: len(data) // 2] if peer_behaviour.startswith("half") else data
        if peer_behaviour.startswith("changed"):  # the same length, one byte not the same
            keep = data[:3] + b"X" + data[4:]
        if peer_behaviour.startswith("nothing"):
            keep = b""
        await server_side.send_all(keep)
        if peer_behaviour.endswith("then closes"):
            await server_side.aclose()
        else:
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer)
        reason = await run_session(client_side, stdin, Collector(), emit=recorder, close_timeout=3)
        nursery.cancel_scope.cancel()
    [end] = recorder.of(SessionEnded)
    return reason, end


@pytest.mark.parametrize(
    ("peer_behaviour", "want", "detail"),
    [
        ("half, then closes", "echo_mismatch", "5 bytes came back for 11 sent"),
        ("half, never closes", "echo_mismatch", "5 bytes came back for 11 sent"),
        ("nothing, never closes", "echo_mismatch", "0 bytes came back for 11 sent"),
        ("changed, then closes", "echo_mismatch", "the echo differs from what was sent at byte 3"),
        ("all, never closes", "no_close", ""),
        ("all, then closes", "eof", ""),
    ],
)
async def test_the_end_is_judged_by_what_came_back(
    peer_behaviour: str, want: str, detail: str, autojump_clock: trio.testing.MockClock
) -> None:
    reason, end = await run_against(peer_behaviour)
    assert (reason, said(end.detail)) == (want, detail)


async def test_a_server_that_stops_echoing_is_given_up_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Input still open, bytes owed, nothing comes back: `stalled`, not a hang."""
    recorder = Recorder()
    stdin_send, stdin = trio.testing.memory_stream_one_way_pair()
    client_side, _server_side = trio.testing.memory_stream_pair()
    await stdin_send.send_all(b"hello?\n")
    reason = await run_session(client_side, stdin, Collector(), emit=recorder, close_timeout=3)
    assert reason == "stalled"
    [end] = recorder.of(SessionEnded)
    assert said(end.detail) == "nothing came back for 3 s with 7 bytes still owed"


async def test_an_idle_session_is_never_timed_out(autojump_clock: trio.testing.MockClock) -> None:
    stdin_send, stdin = trio.testing.memory_stream_one_way_pair()
    client_side, server_side = trio.testing.memory_stream_pair()
    peer = EchoServer()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.handle, server_side)

        async def user() -> None:
            await stdin_send.send_all(b"hi\n")
            await trio.sleep(3600)  # an hour at the keyboard, thinking (mock clock)
            await stdin_send.aclose()

        nursery.start_soon(user)
        reason = await run_session(client_side, stdin, Collector(), close_timeout=3)
    assert reason == "eof"
