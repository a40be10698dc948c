"""The WebSocket layer (RFC 6455): wsproto's sans-IO connection over a connection's
`Transport`, and the echo of messages.

wsproto does the protocol (frames, masking, fragments, UTF-8, ping, the close handshake) and
sees bytes only; this module moves them, as the echo loop does, through the same Transport
(so TLS, the idle timeout and the polite close are the TCP echo's own) and adds what a
public echo needs: a bound on a message (1009 past it), on what compression may inflate
(`BoundedDeflate`), and backpressure (a message is echoed before the next is read, so a
client that does not read slows only itself).
"""

from __future__ import annotations

import zlib
from collections import deque
from dataclasses import dataclass
from typing import Final, final

import trio
from wsproto.connection import Connection as WsConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Ping,
    TextMessage,
)
from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol, Opcode, RsvBits

from trio_echo.events import DisconnectReason, Emit, Received, Sent, Words, preview, says
from trio_echo.i18n import N_
from trio_echo.server.echo import Stalled, finish_send
from trio_echo.server.lifecycle import Connection, Lifecycle
from trio_echo.server.transports import Transport
from trio_echo.server.ws_frames import ForWsproto, FrameSplitter, Whole, server_frame

MAX_MESSAGE: Final = 1 << 20  # bytes of one message, reassembled or inflated (--ws-max-message)
EXIT: Final = b"exit"  # a text message that ends the session, as the TCP line `exit` does


@final
class BoundedDeflate(PerMessageDeflate):
    """permessage-deflate that inflates no message past `limit` bytes: a compressed frame of
    a few kilobytes can inflate to gigabytes (a compression bomb); wsproto inflates whatever
    arrives in one call. Past the limit the connection is closed with 1009."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self._inflated = 0  # bytes of the current message so far

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        assert self._decompressor is not None
        room = self.limit - self._inflated
        try:
            out = self._decompressor.decompress(bytes(data), room + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._inflated += len(out)
        if self._inflated > self.limit or self._decompressor.unconsumed_tail:
            return CloseReason.MESSAGE_TOO_BIG
        return out

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        if fin:
            self._inflated = 0
        return super().frame_inbound_complete(proto, fin)


@final
class MessageLimit(Extension):
    """Not an extension of the protocol but a guard in wsproto's frame parser, which hands
    every frame header to the extensions: a message whose frames declare more than `limit`
    bytes is refused (1009) at its header, before any of it is read or waited for (a 64 MiB
    header followed by a trickle)."""

    name = "trio-echo-message-limit"

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._declared = 0  # bytes the frames of the current message declared so far

    def enabled(self) -> bool:
        return True

    def offer(self) -> bool | str:
        return False

    def frame_inbound_header(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        payload_length: int,
    ) -> CloseReason | RsvBits:
        if not opcode.iscontrol():
            self._declared += payload_length
            if self._declared > self.limit:
                return CloseReason.MESSAGE_TOO_BIG
        return RsvBits(False, False, False)

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        if fin:
            self._declared = 0
        return None


@dataclass(slots=True)
class Ended:
    """How a WebSocket session ended, for the `disconnected` event and the close frame."""

    reason: DisconnectReason
    detail: Words | None = None


class _Closed(Exception):
    def __init__(self, ended: Ended) -> None:
        self.ended = ended


@final
class MessageChannel:
    """Whole messages in and out of one WebSocket connection, one task at a time.

    Single-frame messages come straight from `FrameSplitter` (ws_frames.py); every other
    frame goes through wsproto, in order; echoes are framed by `server_frame`, everything
    else (pongs, close frames) by wsproto."""

    def __init__(self, io: Transport, ws: WsConnection, *, max_message: int = MAX_MESSAGE) -> None:
        self.io = io  # the connection's Transport
        self._ws = ws
        self._max = max_message
        self._splitter = FrameSplitter(max_message)
        self._items: deque[Whole | ForWsproto] = deque()
        self._assembled: deque[Whole] = deque()  # messages wsproto has finished
        self._parts: list[bytes] = []  # of a message wsproto is assembling
        self._size = 0

    async def _send(self, data: bytes) -> None:
        if data and not self.io.send_now(data):
            await self.io.send_rest()

    async def _fill(self) -> None:
        data = self.io.read_now()
        if data is None:
            data = await self.io.receive()
        if data is None:
            raise _Closed(Ended("timeout"))
        if not data:
            raise _Closed(
                Ended("reset", says("ws_no_close", N_("it closed without a close frame")))
            )
        self._items.extend(self._splitter.feed(data))

    async def receive(self) -> Whole:
        """The next whole message, answering pings on the way. Raises `_Closed`."""
        while True:
            if self._assembled:
                return self._assembled.popleft()
            if not self._items:
                await self._fill()
                continue
            item = self._items.popleft()
            if isinstance(item, Whole):
                return item
            self._ws.receive_data(item.data)
            await self._take_events()

    async def _take_events(self) -> None:
        """What wsproto made of the bytes it was given: messages, pings, a close."""
        for event in self._ws.events():
            if isinstance(event, (TextMessage, BytesMessage)):
                data = event.data
                self._parts.append(data.encode() if isinstance(data, str) else bytes(data))
                self._size += len(self._parts[-1])
                if self._size > self._max:
                    await self.close(CloseReason.MESSAGE_TOO_BIG)
                    raise _Closed(_too_big(self._max))
                if event.message_finished:
                    text = isinstance(event, TextMessage)
                    self._assembled.append(Whole(text, b"".join(self._parts)))
                    self._parts, self._size = [], 0
            elif isinstance(event, Ping):
                await self._send(self._ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                raise _Closed(await self._closed_by_peer(event))

    async def _closed_by_peer(self, event: CloseConnection) -> Ended:
        """The peer's close frame (answered with ours), or wsproto's verdict on what it sent
        (a protocol error: 1002, 1007; too large: 1009), which we send as our close."""
        code = int(event.code)
        if self._ws.state is ConnectionState.REMOTE_CLOSING:
            await self._send(self._ws.send(event.response()))
            return Ended("eof", says("ws_close", N_("it closed with code {close_code}"),
                                     close_code=code))  # fmt: skip
        await self.close(code, event.reason or "")
        if code == CloseReason.MESSAGE_TOO_BIG:  # our BoundedDeflate's verdict
            return _too_big(self._max)
        error = event.reason or ""
        text = N_("{close_code}: {error}")
        return Ended("protocol_error", says("ws_protocol", text, close_code=code, error=error))

    def send_now(self, message: Whole) -> bool:
        """The echo of `message`, as far as the socket takes it now; True if all of it."""
        return self.io.send_now(server_frame(message.text, message.payload))

    async def close(self, code: int, reason: str = "") -> None:
        """Our close frame, if the connection is still open (wsproto refuses a second)."""
        if self._ws.state is ConnectionState.OPEN:
            await self._send(self._ws.send(CloseConnection(code=code, reason=reason)))


def _too_big(limit: int) -> Ended:
    return Ended(
        "too_big", says("ws_too_big", N_("a message of more than {limit} bytes"), limit=limit)
    )


async def echo_messages(
    channel: MessageChannel,
    conn: Connection,
    life: Lifecycle,
    *,
    exit_command: bool,
    report: Emit | None,
    idle_timeout: float | None,
    max_bytes: int | None = None,
) -> Ended:
    """Echo every message until the session ends, and say why: a text message `exit`
    (echoed, then close 1000), the client's close, the idle timeout (close 1008), a message
    too large (1009), a protocol error (1002, 1007). A stop cancels the wait for the next
    message (the caller's `conn.reading`); an echo under way is finished first, within the
    stop's deadline, and the close (1001) is the session's `close`. An echo the client takes
    none of for the idle timeout ends it too ("stalled")."""
    while True:
        try:
            message = await channel.receive()
        except _Closed as closed:
            if closed.ended.reason == "timeout":
                await channel.close(CloseReason.POLICY_VIOLATION, "idle timeout")
            return closed.ended
        size = len(message.payload)
        conn.bytes_in += size
        if report is not None:
            report(Received(conn=conn.id, bytes=size, preview=preview(message.payload)))
        try:
            sent = channel.send_now(message) or await finish_send(
                channel.io, conn, life, idle_timeout
            )
        except Stalled:
            return Ended("stalled")
        if sent:  # else the stop's deadline cut it off: the stop ends the session
            conn.bytes_out += size
            if report is not None:
                report(Sent(conn=conn.id, bytes=size))
        if exit_command and message.text and message.payload.strip() == EXIT:
            await channel.close(CloseReason.NORMAL_CLOSURE)
            return Ended("exit")
        if max_bytes is not None and conn.bytes_in >= max_bytes:
            await channel.close(CloseReason.POLICY_VIOLATION, "--max-bytes")
            return Ended("max_bytes")
        await trio.lowlevel.checkpoint()  # fairness, and where a stop takes effect
