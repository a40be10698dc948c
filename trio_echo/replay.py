"""A stream that first gives back bytes a layer before it read past its own part.

A PROXY header's reader reads what the connection has, and the same read may hold the first
bytes of the TLS handshake or of the echo. It hands the next layer a `ReplayStream`, which
returns those bytes before reading on, so no layer after it needs to know it ran.
"""

from __future__ import annotations

from typing import final

import trio


@final
class ReplayStream(trio.abc.HalfCloseableStream):
    """`inner`, with `replay` received first."""

    def __init__(self, inner: trio.abc.HalfCloseableStream, replay: bytes) -> None:
        self.inner = inner
        self.replay = replay

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if not self.replay:
            return bytes(await self.inner.receive_some(max_bytes))
        await trio.lowlevel.checkpoint()
        size = len(self.replay) if max_bytes is None else max_bytes
        data, self.replay = self.replay[:size], self.replay[size:]
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def aclose(self) -> None:
        await self.inner.aclose()


def unwrap(stream: trio.abc.HalfCloseableStream) -> tuple[trio.abc.HalfCloseableStream, bytes]:
    """The stream under a `ReplayStream` and the bytes still to replay (taken: the caller
    now owns them); any other stream as it is, with none."""
    if not isinstance(stream, ReplayStream):
        return stream, b""
    pending, stream.replay = stream.replay, b""
    return stream.inner, pending
