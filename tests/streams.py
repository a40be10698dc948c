"""Helpers for driving code over in-memory streams."""

from __future__ import annotations

from collections.abc import Callable

import trio
import trio.testing


def socket_stream_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    """Two connected Unix sockets. The server moves a real socket's bytes with its own
    non-blocking reads and writes (the fast path); over this pair the property tests
    prove that path, with the kernel choosing the read boundaries."""
    one, two = trio.socket.socketpair()
    return trio.SocketStream(one), trio.SocketStream(two)


StreamPair = Callable[[], tuple[trio.abc.HalfCloseableStream, trio.abc.HalfCloseableStream]]
PAIRS: dict[str, StreamPair] = {
    "memory": trio.testing.memory_stream_pair,
    "lockstep": trio.testing.lockstep_stream_pair,
    "socket": socket_stream_pair,
}


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """`data` cut at the given offsets (clamped, deduplicated), empty pieces dropped."""
    points = sorted({min(c, len(data)) for c in cuts} | {len(data)})
    pieces, last = [], 0
    for point in points:
        if point > last:
            pieces.append(data[last:point])
        last = point
    return pieces


async def send_pieces(stream: trio.abc.HalfCloseableStream, pieces: list[bytes]) -> None:
    """Send each piece, then half-close; stop quietly if the peer has gone."""
    try:
        for piece in pieces:
            await stream.send_all(piece)
            await trio.lowlevel.checkpoint()
        await stream.send_eof()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def receive_all(stream: trio.abc.ReceiveStream, sizes: list[int]) -> bytes:
    """Read until end of stream, asking for the given sizes in turn."""
    got = bytearray()
    turn = 0
    while True:
        try:
            data = await stream.receive_some(sizes[turn % len(sizes)] if sizes else None)
        except trio.BrokenResourceError:
            return bytes(got)
        if not data:
            return bytes(got)
        got += data
        turn += 1


class Collector(trio.abc.SendStream):
    """A send stream that keeps what it is sent (stands in for stdout)."""

    def __init__(self) -> None:
        self.data = bytearray()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()
        self.data += data

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


async def send_until_blocked(stream: trio.abc.SendStream, limit: int = 1 << 30) -> bytes:
    """Send random blocks without reading until the peer stops taking them for a second
    (or `limit` bytes); return every byte attempted, including a block cut short."""
    attempted = bytearray()
    block = bytes(range(256)) * 256  # 64 KiB
    while len(attempted) < limit:
        attempted += block  # before sending: a cancelled send may still have sent a part
        with trio.move_on_after(1) as blocked:
            await stream.send_all(block)
        if blocked.cancelled_caught:
            break
    return bytes(attempted)
