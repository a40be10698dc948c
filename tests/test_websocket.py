"""The HTTP port (`--http`): the page's files, the statuses, and the WebSocket echo against
the `websockets` library (a client nobody here wrote) and against hostile bytes made by
hand: each a clear close code or HTTP status and an event, and the server serves on."""

from __future__ import annotations

import json
import ssl
import struct
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from functools import partial
from typing import Any

import pytest
import trio
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from tests.conftest import Recorder
from tests.processes import run_client, server_process
from trio_echo import tls
from trio_echo.events import Connected, Disconnected, HttpRequest, Received, Sent, WebSocketOpened
from trio_echo.server import EchoServer, HttpConfig, ProxyConfig, ServerConfig

HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


@asynccontextmanager
async def web_server(recorder: Recorder, **options: Any) -> AsyncIterator[EchoServer]:
    """A server with the HTTP port on a free port, in this process."""
    http = HttpConfig(port=0, max_message=options.pop("max_message", 1 << 20))
    config = ServerConfig(port=0, shutdown_timeout=2, http=http, **options)
    async with trio.open_nursery() as nursery:
        server = EchoServer(config, emit=recorder)
        await nursery.start(server.run)
        yield server
        server.stop()


def url(server: EchoServer, scheme: str = "ws") -> str:
    host, port = server.http_addresses[0]
    return f"{scheme}://{host}:{port}/ws"


def talk(address: str, messages: list[str | bytes], **options: Any) -> tuple[list[Any], int]:
    """In a thread: send each message, collect each echo, then `exit`; the close code."""
    echoes: list[Any] = []
    with ws_connect(address, **options) as ws:
        for message in messages:
            ws.send(message)
            echoes.append(ws.recv(timeout=10))
        ws.ping(b"are you there").wait(timeout=10)
        ws.send("exit")
        echoes.append(ws.recv(timeout=10))
        with suppress(ConnectionClosed):
            ws.recv(timeout=10)  # the server's close, which `exit` asked for
        code = ws.close_code if ws.close_code is not None else -1
    return echoes, code


async def test_the_websockets_library_gets_every_message_back_and_exit_closes_1000(
    recorder: Recorder,
) -> None:
    messages: list[str | bytes] = ["hello", "wörld ✓", b"\x00\xff\x1b[31m binary", "x" * 70000]
    async with web_server(recorder) as server:
        echoes, code = await trio.to_thread.run_sync(partial(talk, url(server), messages))
        [ended] = await recorder.wait_for(Disconnected)
    assert echoes == [*messages, "exit"]
    assert code == 1000
    assert (ended.reason, ended.bytes_in, ended.bytes_out) == ("exit", 70033, 70033)
    assert [e.bytes for e in recorder.of(Received)] == [5, 10, 14, 70000, 4]
    assert len(recorder.of(Sent)) == 5
    assert recorder.of(WebSocketOpened)[0].compression  # the library offers permessage-deflate
    assert [(r.method, r.target, r.status) for r in recorder.of(HttpRequest)] == [
        ("GET", "/ws", 101)
    ]


async def test_wss_with_the_ephemeral_certificate(recorder: Recorder) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    async with web_server(recorder, tls=tls.server_tls()) as server:
        address = url(server, "wss")
        echoes, code = await trio.to_thread.run_sync(
            partial(talk, address, ["over TLS"], ssl=context)
        )
    assert (echoes, code) == (["over TLS", "exit"], 1000)


# ---- plain HTTP ----------------------------------------------------------------------------


async def request(server: EchoServer, head: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send a request head, read the whole answer: status, headers, body."""
    host, port = server.http_addresses[0]
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        await stream.send_all(head)
        answer = b""
        with trio.fail_after(10):
            while data := await stream.receive_some(65536):
                answer += data
    top, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = top.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize(
    ("head", "status", "text"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 200, "<!doctype html>"),
        (b"GET /echo.js HTTP/1.1\r\nHost: x\r\n\r\n", 200, "new WebSocket(url)"),
        (b"GET /?lang=ru HTTP/1.1\r\nHost: x\r\n\r\n", 200, "echo.js"),
        (b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 404, "the page is at /"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405, "only GET"),
        (b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", 426, "Upgrade: websocket"),
        (HANDSHAKE.replace(b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", b"") + b"\r\n",
         400, "Sec-WebSocket-Key"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n", 400, ""),
    ],
)  # fmt: skip
async def test_every_request_gets_its_status_and_an_event(
    recorder: Recorder, head: bytes, status: int, text: str
) -> None:
    async with web_server(recorder) as server:
        got, headers, body = await request(server, head)
        [ended] = await recorder.wait_for(Disconnected)
    assert got == status
    assert text in body.decode(errors="replace")
    assert headers["connection"] == "close"
    assert "default-src 'self'" in headers["content-security-policy"]
    assert [event.status for event in recorder.of(HttpRequest)] == [status]
    assert ended.reason == ("protocol_error" if status == 400 else "served")


async def test_a_slowloris_on_the_request_line_is_answered_408(recorder: Recorder) -> None:
    async with web_server(recorder, idle_timeout=1) as server:
        host, port = server.http_addresses[0]
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            await stream.send_all(b"GET / HT")  # and then nothing
            answer = b""
            with trio.fail_after(10):
                while data := await stream.receive_some(65536):
                    answer += data
        [ended] = await recorder.wait_for(Disconnected)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert ended.reason == "timeout"


# ---- hostile WebSocket bytes ---------------------------------------------------------------


def frame(opcode: int, payload: bytes, *, masked: bool = True, length: int | None = None,
          rsv1: bool = False) -> bytes:  # fmt: skip
    """A frame as a client makes it; the mask key is zero, so the payload is unchanged."""
    size = len(payload) if length is None else length
    head = bytes([0x80 | (0x40 if rsv1 else 0) | opcode])
    bit = 0x80 if masked else 0
    if size < 126:
        head += bytes([bit | size])
    elif size < 1 << 16:
        head += bytes([bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", size)
    return head + (b"\0\0\0\0" if masked else b"") + payload


@asynccontextmanager
async def raw_websocket(
    server: EchoServer, extensions: bytes = b""
) -> AsyncIterator[trio.SocketStream]:
    host, port = server.http_addresses[0]
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        await stream.send_all(HANDSHAKE + extensions + b"\r\n")
        answer = b""
        with trio.fail_after(10):
            while b"\r\n\r\n" not in answer:
                answer += await stream.receive_some(4096)
        assert answer.startswith(b"HTTP/1.1 101 "), answer
        yield stream


async def close_code(stream: trio.SocketStream) -> int:
    """Read the server's frames until its close frame; its code."""
    data = b""
    with trio.fail_after(20):
        while True:
            while len(data) >= 2:
                opcode, size = data[0] & 0x0F, data[1] & 0x7F
                at = 2
                if size == 126:
                    size, at = struct.unpack("!H", data[2:4])[0], 4
                elif size == 127:
                    size, at = struct.unpack("!Q", data[2:10])[0], 10
                if len(data) < at + size:
                    break
                payload, data = data[at : at + size], data[at + size :]
                if opcode == 0x8:
                    code: int = struct.unpack("!H", payload[:2])[0]
                    return code
            try:
                more = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                more = b""
            if not more:
                raise AssertionError("the connection ended without a close frame")
            data += more


def deflated(size: int) -> bytes:
    """`size` zero bytes, compressed as permessage-deflate sends them (a compression bomb)."""
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -15)
    out = squeeze.compress(b"\0" * size) + squeeze.flush(zlib.Z_SYNC_FLUSH)
    return out[:-4]  # the empty block's 00 00 ff ff is implied


HOSTILE = {
    "unmasked": (frame(0x1, b"hello", masked=False), 1002, "protocol_error"),
    "invalid UTF-8": (frame(0x1, b"caf\xc3\x28"), 1007, "protocol_error"),
    "a 2 MiB frame": (frame(0x2, b"x" * (2 << 20)), 1009, "too_big"),
    "a 64 MiB frame header": (frame(0x2, b"x" * 65536, length=64 << 20), 1009, "too_big"),
    "a reserved opcode": (frame(0x3, b""), 1002, "protocol_error"),
    "an oversized ping": (frame(0x9, b"p" * 126), 1002, "protocol_error"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
async def test_hostile_frames_get_their_close_code_and_the_server_serves_on(
    recorder: Recorder, name: str
) -> None:
    sent, code, reason = HOSTILE[name]
    async with web_server(recorder) as server:
        async with raw_websocket(server) as stream:
            with trio.move_on_after(10):  # the server may close before taking all of it
                with suppress(trio.BrokenResourceError):
                    await stream.send_all(sent)
            assert await close_code(stream) == code
        [ended] = await recorder.wait_for(Disconnected)
        echoes, _ = await trio.to_thread.run_sync(partial(talk, url(server), ["next"]))
    assert ended.reason == reason
    assert echoes == ["next", "exit"]


async def test_a_compression_bomb_is_stopped_at_the_message_limit(recorder: Recorder) -> None:
    bomb = deflated(200 << 20)  # 200 MiB of zeros in about 200 KB
    assert len(bomb) < 300_000
    async with web_server(recorder) as server:
        offer = b"Sec-WebSocket-Extensions: permessage-deflate\r\n"
        async with raw_websocket(server, offer) as stream:
            with trio.move_on_after(10):
                with suppress(trio.BrokenResourceError):
                    await stream.send_all(frame(0x2, bomb, rsv1=True))
            assert await close_code(stream) == 1009
        [ended] = await recorder.wait_for(Disconnected)
    assert ended.reason == "too_big"
    assert ended.bytes_in == 0  # nothing past the limit was kept, nor echoed


async def test_a_thousand_idle_websockets_do_not_keep_anyone_waiting(
    recorder: Recorder,
) -> None:
    async with (
        web_server(recorder, data_events=False, max_connections=2000) as server,
        trio.open_nursery() as nursery,
    ):

        async def hold() -> None:
            async with raw_websocket(server):
                await trio.sleep_forever()

        for _ in range(1000):
            nursery.start_soon(hold)
        await recorder.wait_for(WebSocketOpened, 1000)
        echoes, code = await trio.to_thread.run_sync(partial(talk, url(server), ["me too"]))
        assert (echoes, code) == (["me too", "exit"], 1000)
        nursery.cancel_scope.cancel()


async def test_a_stop_closes_websockets_with_1001_after_the_echo(recorder: Recorder) -> None:
    async with web_server(recorder) as server, raw_websocket(server) as stream:
        await stream.send_all(frame(0x1, b"last words"))
        await recorder.wait_for(Sent)
        server.stop()
        assert await close_code(stream) == 1001
    [ended] = recorder.of(Disconnected)
    assert (ended.reason, ended.bytes_in, ended.bytes_out) == ("shutdown", 10, 10)


def test_the_page_is_in_the_wheel() -> None:
    from importlib import resources

    web = resources.files("trio_echo") / "web"
    assert {"index.html", "echo.js", "echo.css"} <= {p.name for p in web.iterdir()}


@pytest.mark.parametrize("tls_on", [False, True], ids=["ws", "wss"])
async def test_our_client_over_websocket_end_of_input_and_exit(tls_on: bool) -> None:
    options = ["--http", "0", *(["--tls"] if tls_on else [])]
    secure = ["--tls", "--tls-insecure"] if tls_on else []
    async with server_process(*options) as server:
        port = str(json.loads(await server.log.until('"transport": "http"'))["port"])
        ended = await run_client("--port", port, "--websocket", *secure, stdin=b"a\nb\xff\nc")
        first = json.loads(await server.log.until('"server.disconnected"'))
        exited = await run_client("--port", port, "--websocket", *secure, stdin=b"x\nexit\ny\n")
        second = json.loads(await server.log.until('"server.disconnected"'))
    assert (ended.returncode, ended.stdout) == (0, b"a\nb\xff\nc"), ended.stderr
    assert (first["reason"], first["bytes_in"], first["bytes_out"]) == ("eof", 6, 6)
    assert first["detail"] == {"code": "ws_close", "close_code": 1000}
    assert (exited.returncode, exited.stdout) == (0, b"x\nexit\n"), exited.stderr
    assert second["reason"] == "exit"


async def test_the_proxy_protocol_applies_to_the_http_port(recorder: Recorder) -> None:
    async with web_server(recorder, proxy=ProxyConfig()) as server:
        header = b"PROXY TCP4 198.18.0.9 127.0.0.1 5555 80\r\n"
        status, _headers, _body = await request(
            server, header + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        [connected] = await recorder.wait_for(Connected)
        info = b"GET /info HTTP/1.1\r\nHost: x\r\n\r\n"
        _status, headers, body = await request(server, header + info)
    assert headers["content-type"] == "application/json"
    who = json.loads(body)  # which backend answered, and what it saw of the client
    assert who["name"] == ServerConfig().name  # the host name, by default
    assert who["client"]["address"] == "198.18.0.9:5555"
    assert who["client"]["via"].startswith("127.0.0.1:")
    assert status == 200
    assert (connected.peer, connected.transport) == ("198.18.0.9:5555", "http")
    assert connected.via is not None


async def test_a_silent_websocket_is_closed_1008_after_the_idle_timeout(recorder: Recorder) -> None:
    async with web_server(recorder, idle_timeout=1) as server, raw_websocket(server) as stream:
        assert await close_code(stream) == 1008
    [ended] = recorder.of(Disconnected)
    assert ended.reason == "timeout"


async def test_a_client_that_does_not_read_slows_only_itself(recorder: Recorder) -> None:
    """Backpressure: its echoes fill the socket, the server stops reading it, the others are
    served; once it has taken none of its echo for the idle timeout, it is `stalled`."""
    async with (
        web_server(recorder, idle_timeout=2, data_events=False) as server,
        raw_websocket(server) as hog,
    ):
        message = frame(0x2, b"z" * 65536)
        with trio.move_on_after(1) as sending:
            while True:  # until the socket takes no more: the server stopped reading it
                await hog.send_all(message)
        assert sending.cancelled_caught
        echoes, code = await trio.to_thread.run_sync(partial(talk, url(server), ["other"]))
        assert (echoes, code) == (["other", "exit"], 1000)
        ends = await recorder.wait_for(Disconnected, 2)
    assert sorted(e.reason for e in ends) == ["exit", "stalled"]
