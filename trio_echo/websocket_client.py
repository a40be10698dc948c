"""The client's WebSocket layer (`--websocket`): the upgrade over any trio stream (TCP or
TLS), then a byte stream over WebSocket messages, so that the client's pumps, its session
tracker and its byte-for-byte echo check work unchanged.

Each line sent is one message (text if it is UTF-8, else binary), so that a line `exit` is
a message of its own, as the server's `exit` rule for WebSockets wants; a line longer than
`MAX_PIECE` goes as several messages. The server's close frame is the end of the stream;
ours is sent by `aclose`, once the echo is complete.
"""

from __future__ import annotations

from contextlib import suppress
from typing import Final, final

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from trio_echo.events import Words, preview, quoted, says
from trio_echo.i18n import N_

DEFAULT_PATH: Final = "/ws"
MAX_PIECE: Final = 64 * 1024  # the longest message we make of one line
READ_SIZE: Final = 65536
CLOSE_SECONDS: Final = 2.0  # for the server's close frame after ours
HEAD_BYTES: Final = 64  # of an answer that is not HTTP, to show


class WebSocketRefused(Exception):
    """The upgrade did not happen; `words` say why, for a person."""

    def __init__(self, words: Words, status: int | None = None, server: str | None = None):
        super().__init__(words.text.format(**dict(words.args)))
        self.words, self.status, self.server = words, status, server


async def open_websocket(
    transport: trio.abc.Stream, host: str, path: str = DEFAULT_PATH, *, lines: bool = True
) -> WebSocketStream:
    """Upgrade `transport` to a WebSocket at `path`, or raise `WebSocketRefused` saying how
    the answer fell short: not HTTP at all, HTTP without the upgrade, a refusal. `lines`:
    a message a line (the client's stdin); else a message a `send_all` (the check's probes)."""
    ws = WSConnection(ConnectionType.CLIENT)
    await transport.send_all(ws.send(Request(host=host, target=path)))
    seen = b""
    while True:
        data = await transport.receive_some(READ_SIZE)
        if not data:
            raise WebSocketRefused(_no_answer(seen))
        seen += data[: HEAD_BYTES - len(seen)] if len(seen) < HEAD_BYTES else b""
        try:
            ws.receive_data(bytes(data))
            events = list(ws.events())
        except RemoteProtocolError:
            raise WebSocketRefused(_not_http(seen)) from None
        for event in events:
            if isinstance(event, AcceptConnection):
                return WebSocketStream(transport, ws, lines=lines)
            if isinstance(event, RejectConnection):
                headers = dict(event.headers)
                server = headers.get(b"server", b"").decode("ascii", "replace") or None
                raise WebSocketRefused(
                    _refused(event.status_code, server), event.status_code, server
                )
            if isinstance(event, RejectData):
                continue


def _no_answer(seen: bytes) -> Words:
    if not seen:
        return says("ws_closed", N_("the server closed the connection without an answer"))
    return _not_http(seen)


def _not_http(seen: bytes) -> Words:
    if seen.startswith(b"GET "):
        return says(
            "ws_echoed",
            N_("the server sent our HTTP request back: a plain echo, not HTTP (try without "
               "--websocket)"),
        )  # fmt: skip
    return says(
        "ws_not_http", N_("the server does not speak HTTP: it answered {quoted}"),
        quoted=quoted(preview(seen), len(seen)),
    )  # fmt: skip


def _refused(status: int, server: str | None) -> Words:
    who = server or "?"
    if status == 101:  # a 101 that wsproto refused: a wrong accept key or upgrade header
        return says("ws_bad_101", N_("an invalid 101 answer (server {server})"), server=who)
    if status in (200, 404, 426, 400):
        return says(
            "ws_no_upgrade",
            N_("HTTP {status} instead of an upgrade (server {server}): no WebSocket at this "
               "path, or a proxy on the way strips the Upgrade header"),
            status=status, server=who,
        )  # fmt: skip
    return says(
        "ws_refused", N_("the upgrade was refused: HTTP {status} (server {server})"),
        status=status, server=who,
    )  # fmt: skip


@final
class WebSocketStream(trio.abc.Stream):
    """Bytes over an open WebSocket: what is sent goes as messages (a line each, or a
    `send_all` each); what is received is each message's bytes, in order. One task sends and
    one receives, as with a socket.

    Not half-closeable: a close frame ends both directions, and a server answers it at once,
    dropping echoes still queued (the `websockets` library does). So the client waits for
    every echo before `aclose`, which sends our close frame (1000) and waits a moment for the
    server's."""

    def __init__(self, transport: trio.abc.Stream, ws: WSConnection, *, lines: bool = True) -> None:
        self.transport = transport
        self._ws = ws
        self._lines = lines
        self._unread = b""  # the rest of a message larger than a read
        self._closed = False  # the server's close frame came
        self._send_lock = trio.Lock()  # pongs are sent by the receiving task too
        self.close_code: int | None = None

    async def _send_raw(self, data: bytes) -> None:
        async with self._send_lock:
            await self.transport.send_all(data)

    async def _send_message(self, piece: bytes) -> None:
        try:
            event: TextMessage | BytesMessage = TextMessage(piece.decode())
        except UnicodeDecodeError:
            event = BytesMessage(piece)
        try:
            data = self._ws.send(event)
        except LocalProtocolError as exc:  # the server closed: nothing more may be sent
            raise trio.BrokenResourceError(str(exc)) from None
        await self._send_raw(data)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        whole = bytes(data)
        start = 0
        while start < len(whole):
            end = whole.find(b"\n", start, start + MAX_PIECE) if self._lines else -1
            stop = min(len(whole), start + MAX_PIECE) if end < 0 else end + 1
            await self._send_message(whole[start:stop])
            start = stop

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        size = READ_SIZE if max_bytes is None else max_bytes
        while not self._unread:
            if self._closed:
                return b""
            await self._next_message()
        data, self._unread = self._unread[:size], self._unread[size:]
        return data

    async def _next_message(self) -> None:
        for event in self._ws.events():
            if isinstance(event, (TextMessage, BytesMessage)):
                data = event.data
                self._unread += data.encode() if isinstance(data, str) else bytes(data)
                if self._unread:
                    return
            elif isinstance(event, Ping):
                await self._send_raw(self._ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self._closed = True
                self.close_code = int(event.code)
                # An error here: we had closed first, and this was the answer to ours.
                with suppress(
                    LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError
                ):
                    await self._send_raw(self._ws.send(event.response()))
                return
        data = await self.transport.receive_some(READ_SIZE)
        if not data:
            raise trio.BrokenResourceError("the connection ended without a WebSocket close")
        self._ws.receive_data(bytes(data))

    async def aclose(self) -> None:
        """Our close frame, unless the server's came first; its answer, within a moment."""
        try:
            if not self._closed:
                with (
                    trio.move_on_after(CLOSE_SECONDS),
                    suppress(
                        LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError
                    ),
                ):
                    await self._send_raw(self._ws.send(CloseConnection(code=1000)))
                    while not self._closed:
                        self._unread = b""
                        await self._next_message()
        finally:
            await self.transport.aclose()
