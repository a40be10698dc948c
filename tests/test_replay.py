"""The stream a layer hands on after reading past its own part (`trio_echo.replay`): trio's
own conformance checks for a half-closeable stream, and the replayed bytes first, in order,
whatever the reads' sizes."""

from __future__ import annotations

import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from trio_echo.replay import ReplayStream, unwrap


async def replaying_pair() -> tuple[ReplayStream, ReplayStream]:
    left, right = trio.testing.memory_stream_pair()
    return ReplayStream(left, b""), ReplayStream(right, b"")


async def test_a_replay_stream_is_a_conforming_half_closeable_stream() -> None:
    await trio.testing.check_half_closeable_stream(replaying_pair, None)


@given(
    replay=st.binary(max_size=200),
    later=st.binary(max_size=200),
    sizes=st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=20),
)
def test_the_replayed_bytes_come_first_then_the_stream_s(
    replay: bytes, later: bytes, sizes: list[int]
) -> None:
    async def main() -> bytes:
        client, server = trio.testing.memory_stream_pair()
        stream = ReplayStream(server, replay)
        await client.send_all(later)
        await client.send_eof()
        got = bytearray()
        reads = 0
        while data := await stream.receive_some(size := sizes[reads % len(sizes)]):
            assert len(data) <= size
            got += data
            reads += 1
        return bytes(got)

    assert trio.run(main) == replay + later


def test_unwrap_hands_over_what_is_left_to_replay_exactly_once() -> None:
    inner, _ = trio.testing.memory_stream_pair()
    stream = ReplayStream(inner, b"hello")
    assert unwrap(stream) == (inner, b"hello")
    assert unwrap(stream) == (inner, b"")
    assert unwrap(inner) == (inner, b"")
