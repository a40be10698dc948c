"""The server's connection handler over in-memory streams: the echo contract as a model."""

from __future__ import annotations

import socket

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import Recorder
from tests.streams import PAIRS, receive_all, send_pieces, socket_stream_pair, split
from tests.test_protocol import interesting, model
from trio_echo import server as server_module
from trio_echo.events import Disconnected, Received, Sent
from trio_echo.server import EchoServer, ServerConfig

cuts = st.lists(st.integers(min_value=0, max_value=400), max_size=10)
sizes = st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=5)


def expected(data: bytes, exit_command: bool) -> tuple[bytes, str]:
    """What comes back, and why the connection ends, by the model of the contract."""
    if exit_command:
        cut = model(data, at_end=True)
        if cut is not None:
            return data[:cut], "exit"
    return data, "eof"


async def echo_through_handler(
    data: bytes, cut_at: list[int], receive_sizes: list[int], pair: str, **options: object
) -> tuple[bytes, str, Recorder]:
    recorder = Recorder()
    server = EchoServer(ServerConfig(**options), emit=recorder)  # type: ignore[arg-type]
    client_side, server_side = PAIRS[pair]()
    result: dict[str, object] = {}

    async def run_handler() -> None:
        result["reason"] = await server.handle(server_side)

    with trio.fail_after(30):
        async with client_side, server_side, trio.open_nursery() as nursery:
            nursery.start_soon(run_handler)
            nursery.start_soon(send_pieces, client_side, split(data, cut_at))
            echoed = await receive_all(client_side, receive_sizes)
    return echoed, str(result["reason"]), recorder


@given(
    data=interesting | st.binary(max_size=500),
    cut_at=cuts,
    receive_sizes=sizes,
    chunk_size=st.integers(min_value=1, max_value=64),
    pair=st.sampled_from(sorted(PAIRS)),
    exit_command=st.booleans(),
)
async def test_echo_is_the_input_up_to_the_first_exit_line(
    data: bytes,
    cut_at: list[int],
    receive_sizes: list[int],
    chunk_size: int,
    pair: str,
    exit_command: bool,
) -> None:
    echoed, reason, recorder = await echo_through_handler(
        data, cut_at, receive_sizes, pair, chunk_size=chunk_size, exit_command=exit_command
    )
    want_echo, want_reason = expected(data, exit_command)
    assert echoed == want_echo
    assert reason == want_reason
    # The log tells the same story: reads bounded by chunk_size, sent bytes add up.
    received = recorder.of(Received)
    assert all(0 < event.bytes <= chunk_size for event in received)
    assert sum(event.bytes for event in recorder.of(Sent)) == len(want_echo)
    [end] = recorder.of(Disconnected)
    assert isinstance(end, Disconnected)
    assert (end.reason, end.bytes_out) == (want_reason, len(want_echo))
    assert end.bytes_in == sum(event.bytes for event in received)


@pytest.mark.parametrize("pair", sorted(PAIRS))
async def test_bytes_after_exit_in_the_same_read_are_not_echoed(pair: str) -> None:
    echoed, reason, _ = await echo_through_handler(
        b"one\nexit\ntwo\n", [], [100], pair, chunk_size=1024
    )
    assert (echoed, reason) == (b"one\nexit\n", "exit")


async def test_quiet_leaves_out_only_the_data_events() -> None:
    _, _, loud = await echo_through_handler(b"hi\n", [], [10], "memory")
    _, _, quiet = await echo_through_handler(b"hi\n", [], [10], "memory", data_events=False)
    kinds = [type(event).__name__ for event in loud.events]
    assert kinds == ["Connected", "Received", "Sent", "Disconnected"]
    assert [type(event).__name__ for event in quiet.events] == ["Connected", "Disconnected"]


async def test_a_peer_that_breaks_the_stream_is_a_reset_not_a_crash() -> None:
    recorder = Recorder()
    server = EchoServer(emit=recorder)
    client_side, server_side = trio.testing.memory_stream_pair()
    await client_side.send_all(b"partial")
    await client_side.aclose()  # the memory stream then breaks the server's send
    reason = await server.handle(server_side)
    assert reason == "reset"


async def test_reading_on_after_full_reads_still_lets_others_run() -> None:
    """With large reads, a read that fills the buffer is followed at once by the next, with
    no checkpoint in between; but only STREAK times: then the loop lets other tasks run,
    however much the client has queued. An observer task counts the reads between two of
    its own turns (each read a `received` event)."""
    recorder = Recorder()
    server = EchoServer(ServerConfig(chunk_size=server_module.LARGE_READ), emit=recorder)
    client_side, server_side = socket_stream_pair()
    for stream in (client_side, server_side):
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            stream.socket.setsockopt(socket.SOL_SOCKET, option, 8 << 20)
    queued = b"x" * (32 * server_module.LARGE_READ)  # all there before the server reads
    with trio.fail_after(30):
        await client_side.send_all(queued)
    gaps: list[int] = []

    async def observe() -> None:
        seen = 0
        while True:
            await trio.lowlevel.checkpoint()
            reads = sum(isinstance(event, Received) for event in recorder.events)
            gaps.append(reads - seen)
            seen = reads

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(observe)
            nursery.start_soon(server.handle, server_side)
            echoed = b""
            while len(echoed) < len(queued):
                echoed += await client_side.receive_some(1 << 20)
            nursery.cancel_scope.cancel()
    assert echoed == queued
    # The observer runs once a batch of trio's scheduler, the server at most twice between
    # two of its turns (after it in one batch, before it in the next).
    assert max(gaps) <= 2 * server_module.STREAK
    assert max(gaps) > 1  # it did read on: the rest of the queue was there
