"""The HTTP side (`--http`): the page and the WebSocket echo, one request per connection.

The request head is read with h11 (sans-IO, like wsproto and our exit detector) within a
deadline (`REQUEST_SECONDS`, or the idle timeout if shorter: a slowloris on the request line
is closed with 408) and a size bound (`MAX_HEAD`: 431). `GET /` and its two files are
served from the package, no CDN and no build step; `GET /ws` with an Upgrade becomes a
WebSocket (`websocket.py`) handed the bytes read past the head; anything else gets its
status (400, 404, 405, 426) and one line of text. Every request is an `http_request` event.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from http import HTTPStatus
from importlib import resources
from typing import Final, NoReturn, final

import h11
import trio
from wsproto.connection import Connection as WsConnection
from wsproto.connection import ConnectionType
from wsproto.events import AcceptConnection, Request
from wsproto.extensions import Extension
from wsproto.handshake import H11Handshake
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from trio_echo import __version__
from trio_echo.events import (
    DisconnectReason,
    Emit,
    HttpRequest,
    WebSocketOpened,
    Words,
    preview,
    says,
)
from trio_echo.i18n import N_
from trio_echo.server.lifecycle import Connection, Lifecycle
from trio_echo.server.transports import Transport
from trio_echo.server.websocket import (
    BoundedDeflate,
    Ended,
    MessageChannel,
    MessageLimit,
    echo_messages,
)

REQUEST_SECONDS: Final = 10.0  # to send a whole request head
MAX_HEAD: Final = 16 * 1024  # bytes of a request head
WEB_READ: Final = 64 * 1024  # bytes per read on this port: a 1 KiB message is 1,032 on the wire
WS_PATH: Final = "/ws"
# The page's files, from the package: path -> (file, content type).
FILES: Final = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/echo.js": ("echo.js", "text/javascript; charset=utf-8"),
    "/echo.css": ("echo.css", "text/css; charset=utf-8"),
}
# The page loads nothing but its own files and talks to nothing but its own origin.
SECURITY_HEADERS: Final = [
    (b"Content-Security-Policy", b"default-src 'self'; connect-src 'self'"),
    (b"X-Content-Type-Options", b"nosniff"),
    (b"Referrer-Policy", b"no-referrer"),
    (b"Cache-Control", b"no-store"),
]


@dataclass(frozen=True, kw_only=True, slots=True)
class WebConfig:
    """What the HTTP side needs of the server's configuration."""

    exit_command: bool
    idle_timeout: float | None
    data_events: bool
    max_message: int
    max_bytes: int | None = None
    info: bytes = b"{}"  # /info's answer: which server, and what it saw of this client


class _Answered(Exception):
    """The request got a status other than 101: the session is over."""

    def __init__(self, reason: DisconnectReason, detail: Words | None = None) -> None:
        self.reason, self.detail = reason, detail


@final
class WebSession:
    """One connection of the HTTP port, from its request to its end."""

    def __init__(
        self, io: Transport, conn: Connection, life: Lifecycle, config: WebConfig, emit: Emit
    ) -> None:
        self._io, self._conn, self._life = io, conn, life
        self._config, self._emit = config, emit
        self._channel: MessageChannel | None = None

    async def run(self) -> tuple[DisconnectReason, Words | None]:
        """Answer the request; for a WebSocket, echo its messages until it ends."""
        http = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        try:
            request = await self._read_head(http)
            await self._route(http, request)
        except _Answered as answered:
            return answered.reason, answered.detail
        assert self._channel is not None
        config = self._config
        ended: Ended = await echo_messages(
            self._channel,
            self._conn,
            self._life,
            exit_command=config.exit_command,
            report=self._emit if config.data_events else None,
            idle_timeout=config.idle_timeout,
            max_bytes=config.max_bytes,
        )
        return ended.reason, ended.detail

    async def close(self, reason: DisconnectReason) -> None:
        """A WebSocket stopped from outside gets its close frame first: 1001 for a stop,
        1008 at --max-duration."""
        code = {"shutdown": 1001, "max_duration": 1008}.get(reason)
        if self._channel is not None and code is not None:
            with trio.move_on_after(1):
                await self._channel.close(code)
        await self._io.close(reason)

    # ---- the request --------------------------------------------------------------------

    async def _read_head(self, http: h11.Connection) -> h11.Request:
        seconds = REQUEST_SECONDS
        if self._config.idle_timeout is not None:
            seconds = min(seconds, self._config.idle_timeout)
        with trio.move_on_after(seconds):
            while True:
                try:
                    event = http.next_event()
                except h11.RemoteProtocolError as exc:
                    status = exc.error_status_hint
                    if status == 400 and "exceeded" in str(exc):
                        status = 431  # the head is past MAX_HEAD
                    await self._answer(http, None, status, str(exc))
                if isinstance(event, h11.Request):
                    return event
                if event is h11.PAUSED or isinstance(event, h11.ConnectionClosed):
                    raise _Answered("eof")
                data = self._io.read_now()
                if data is None:
                    data = await self._io.receive()
                if data is None:  # the idle timeout, below REQUEST_SECONDS
                    break
                http.receive_data(data)
        await self._answer(
            http, None, 408, says("http_slow", N_("no whole request in {s:g} s"), s=seconds)
        )

    async def _route(self, http: h11.Connection, request: h11.Request) -> None:
        method = request.method.decode("ascii", "replace")
        target = request.target.decode("ascii", "replace")
        path = target.split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            await self._answer(http, request, 405, f"{method} is not served here: only GET")
        if path in FILES:
            name, kind = FILES[path]
            body = resources.files("trio_echo").joinpath("web", name).read_bytes()
            head = [(b"Content-Type", kind.encode()), *SECURITY_HEADERS]
            await self._respond(http, request, 200, head, b"" if method == "HEAD" else body)
            raise _Answered("served")
        if path == "/info":
            head = [(b"Content-Type", b"application/json"), *SECURITY_HEADERS]
            await self._respond(http, request, 200, head, self._config.info)
            raise _Answered("served")
        if path != WS_PATH:
            await self._answer(http, request, 404, f"nothing at {path}: the page is at /")
        upgrade = dict(request.headers).get(b"upgrade", b"").lower()
        if method != "GET" or upgrade != b"websocket":
            await self._answer(
                http, request, 426, "this is a WebSocket endpoint: it needs Upgrade: websocket"
            )
        await self._upgrade(http, request)

    async def _upgrade(self, http: h11.Connection, request: h11.Request) -> None:
        handshake = H11Handshake(ConnectionType.SERVER)
        try:
            handshake.initiate_upgrade_connection(list(request.headers), request.target)
            wanted = next(handshake.events())
            assert isinstance(wanted, Request)
            limit = self._config.max_message
            deflate = BoundedDeflate(limit)  # taken only if the client offers it
            data = handshake.send(AcceptConnection(extensions=[deflate]))
        except (RemoteProtocolError, LocalProtocolError, StopIteration) as exc:
            await self._answer(http, request, 400, f"not a valid WebSocket upgrade: {exc}")
        await self._send(data)
        compressed = deflate.enabled()
        guards: list[Extension] = [MessageLimit(limit), *([deflate] if compressed else [])]
        ws = WsConnection(ConnectionType.SERVER, extensions=guards)
        leftover, _closed = http.trailing_data
        if leftover:
            ws.receive_data(bytes(leftover))
        self._emit(_request_event(self._conn, request, 101))
        self._emit(WebSocketOpened(conn=self._conn.id, compression=compressed))
        self._channel = MessageChannel(self._io, ws, max_message=self._config.max_message)

    # ---- answers --------------------------------------------------------------------------

    async def _answer(
        self, http: h11.Connection, request: h11.Request | None, status: int, why: str | Words
    ) -> NoReturn:
        """A status and one line of text, then the end of the session."""
        text = why if isinstance(why, str) else why.text.format(**dict(why.args))
        head = [(b"Content-Type", b"text/plain; charset=utf-8"), *SECURITY_HEADERS]
        await self._respond(http, request, status, head, text.encode() + b"\n")
        if status == 408:
            raise _Answered("timeout", why if isinstance(why, Words) else None)
        detail = says("http_status", "{status} {error}", status=status, error=text)
        raise _Answered("protocol_error" if status in (400, 431) else "served", detail)

    async def _respond(
        self,
        http: h11.Connection,
        request: h11.Request | None,
        status: int,
        head: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> None:
        headers = [
            *head,
            (b"Content-Length", str(len(body)).encode()),
            (b"Connection", b"close"),
            (b"Server", f"trio-echo/{__version__}".encode()),
        ]
        self._emit(_request_event(self._conn, request, status))
        try:
            phrase = HTTPStatus(status).phrase.encode()
            response = h11.Response(status_code=status, headers=headers, reason=phrase)
            data = http.send(response)
            data += (http.send(h11.Data(data=body)) or b"") if body else b""
            data += http.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:  # h11 can no longer answer (a broken head): just close
            return
        with trio.move_on_after(REQUEST_SECONDS):  # a client that reads no answer
            await self._send(data or b"")

    async def _send(self, data: bytes) -> None:
        if data and not self._io.send_now(data):
            await self._io.send_rest()


def info_document(name: str, uptime: float, peer: str | None, via: str | None) -> bytes:
    """/info: which server answered (its --name, version, uptime), and what it saw of the
    asking client: its address, and the balancer's when a PROXY header named the client."""
    document = {
        "name": name,
        "version": __version__,
        "uptime": round(uptime, 3),
        "client": {"address": peer, "via": via},
    }
    return json.dumps(document).encode() + b"\n"


def _request_event(conn: Connection, request: h11.Request | None, status: int) -> HttpRequest:
    if request is None:
        return HttpRequest(conn=conn.id, method=None, target=None, status=status)
    return HttpRequest(
        conn=conn.id,
        method=preview(request.method),
        target=preview(request.target),
        status=status,
    )
