"""trio-echo with programs no one here wrote: nc, ncat, socat, telnet, xinetd, and a plain
blocking-socket client as in a networking lab."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest
import trio

from tests.conftest import Recorder, closed_port, filtered_port, require_tool
from tests.processes import PATIENCE, external_server, free_port, run_client
from trio_echo.events import Disconnected, Received
from trio_echo.server import EchoServer

ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = random.Random(7).randbytes(1 << 20)


async def run(argv: list[str], stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(4 * PATIENCE):
        return await trio.run_process(argv, stdin=stdin, capture_stdout=True, capture_stderr=True)


# ---- our server, foreign clients -----------------------------------------------------------


async def test_openbsd_nc_half_closes_and_gets_everything(
    server: EchoServer, recorder: Recorder
) -> None:
    _, port = server.addresses[0]
    result = await run([require_tool("nc"), "-N", "127.0.0.1", str(port)], PAYLOAD)
    assert result.stdout == PAYLOAD
    [end] = await recorder.wait_for(Disconnected)
    assert (end.reason, end.bytes_in, end.bytes_out) == ("eof", len(PAYLOAD), len(PAYLOAD))


async def test_nc_without_half_close_is_ended_by_exit(
    server: EchoServer, recorder: Recorder
) -> None:
    """Plain `nc` never half-closes: only the server's close after `exit` ends it."""
    _, port = server.addresses[0]
    result = await run([require_tool("nc"), "127.0.0.1", str(port)], b"hello\nexit\nnot this\n")
    assert result.stdout == b"hello\nexit\n"
    [end] = await recorder.wait_for(Disconnected)
    assert end.reason == "exit"


async def test_ncat(server: EchoServer, recorder: Recorder) -> None:
    _, port = server.addresses[0]
    result = await run([require_tool("ncat"), "127.0.0.1", str(port)], PAYLOAD)
    assert result.stdout == PAYLOAD
    [end] = await recorder.wait_for(Disconnected)
    assert end.reason == "eof"


async def test_socat(server: EchoServer, recorder: Recorder) -> None:
    _, port = server.addresses[0]
    result = await run([require_tool("socat"), "-", f"TCP:127.0.0.1:{port}"], PAYLOAD)
    assert result.stdout == PAYLOAD


async def test_telnet_lines_end_in_crlf_and_exit_still_works(
    server: EchoServer, recorder: Recorder
) -> None:
    _, port = server.addresses[0]
    telnet = await trio.lowlevel.open_process(
        [require_tool("telnet"), "127.0.0.1", str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert telnet.stdin is not None
    assert telnet.stdout is not None
    # telnet quits as soon as its input ends, so keep it open until the server has closed.
    await telnet.stdin.send_all(b"hello\nexit\n")
    [end] = await recorder.wait_for(Disconnected)
    assert end.reason == "exit"
    received = b"".join(e.preview.encode() for e in recorder.of(Received))
    assert received == b"hello\\r\\nexit\\r\\n"
    await telnet.stdin.aclose()
    with trio.fail_after(PATIENCE):
        await telnet.wait()
    assert b"hello" in await telnet.stdout.receive_some(65536)


LAB_CLIENT = """
import socket, sys
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10) as s:
    s.sendall(b"hello lab\\n")
    echo = b""
    while not echo.endswith(b"\\n"):
        echo += s.recv(1024)
    s.sendall(b"exit\\n")
    rest = b""
    while chunk := s.recv(1024):
        rest += chunk
print(repr(echo), repr(rest))
"""


async def test_a_plain_blocking_socket_client(server: EchoServer, recorder: Recorder) -> None:
    _, port = server.addresses[0]
    result = await run([sys.executable, "-c", LAB_CLIENT, str(port)], b"")
    assert result.stdout.decode().split() == ["b'hello", "lab\\n'", "b'exit\\n'"]
    [end] = await recorder.wait_for(Disconnected)
    assert end.reason == "exit"


# ---- our client, foreign servers -----------------------------------------------------------


@asynccontextmanager
async def socat_echo() -> AsyncIterator[int]:
    port = free_port()
    argv = [require_tool("socat"), "-d", "-d", f"TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr"]
    async with external_server([*argv, "PIPE"], "listening on"):
        yield port


@asynccontextmanager
async def ncat_cat() -> AsyncIterator[int]:
    port = free_port()
    argv = [require_tool("ncat"), "-v", "-k", "-l", "127.0.0.1", str(port), "-e", "/bin/cat"]
    async with external_server(argv, "Listening on"):
        yield port


@asynccontextmanager
async def xinetd_echo(tmp_path: Path) -> AsyncIterator[int]:
    """xinetd's built-in RFC 862 echo. It must be named `echo` (with UNLISTED and a port);
    without a syslog daemon its messages go to -filelog, here our pipe."""
    xinetd = require_tool("xinetd")
    if os.geteuid() != 0:
        pytest.skip("xinetd needs root")
    port = free_port()
    config = tmp_path / "xinetd.conf"
    config.write_text(
        "defaults\n{\n}\nservice echo\n{\n    type = INTERNAL UNLISTED\n    id = echo-stream\n"
        "    socket_type = stream\n    protocol = tcp\n    user = root\n    wait = no\n"
        f"    port = {port}\n    bind = 127.0.0.1\n}}\n"
    )
    argv = [xinetd, "-dontfork", "-f", str(config), "-pidfile", str(tmp_path / "pid")]
    async with external_server([*argv, "-filelog", "/dev/stderr"], "Started working: 1"):
        yield port


PEERS: dict[str, Callable[[Path], AbstractAsyncContextManager[int]]] = {
    "socat PIPE": lambda _: socat_echo(),
    "xinetd echo": xinetd_echo,
}


@pytest.mark.parametrize("peer", sorted(PEERS))
async def test_our_client_with_a_foreign_echo_server(peer: str, tmp_path: Path) -> None:
    async with PEERS[peer](tmp_path) as port:
        piped = await run_client("--port", str(port), "--quiet", stdin=PAYLOAD)
        assert (piped.returncode, piped.stdout) == (0, PAYLOAD)
        exited = await run_client(
            "--port", str(port), "--exit-timeout", "0.5", stdin=b"hi\nexit\nnot sent\n"
        )
    # These are plain RFC 862 servers: `exit` is data to them, so the client closes.
    assert (exited.returncode, exited.stdout) == (0, b"hi\nexit\n")
    assert "plain echo server that ignores `exit`" in exited.stderr.decode()


async def test_ncat_exec_cat_is_unreliable_and_the_client_says_so() -> None:
    """`ncat -k -l -e /bin/cat` relays through a pipe to cat. When our client half-closes,
    ncat sometimes closes the connection before cat's last output is relayed (seen: 983,040
    of 1,048,576 bytes back), sometimes never closes, and sometimes stops reading altogether.
    The client must never call that a success, nor hang: a short echo is `echo_mismatch`, a
    server silent while it owes bytes is `stalled` (both status 1)."""
    async with ncat_cat() as port:
        for _ in range(5):
            result = await run_client(
                "--port", str(port), "--quiet", "--close-timeout", "1", stdin=PAYLOAD
            )
            if result.stdout == PAYLOAD:
                assert result.returncode == 0
            else:
                assert result.returncode == 1
                said = result.stderr.decode()
                assert "the echo did not match" in said or "stopped echoing" in said
        exited = await run_client(
            "--port", str(port), "--exit-timeout", "0.5", stdin=b"hi\nexit\nnot sent\n"
        )
    assert (exited.returncode, exited.stdout) == (0, b"hi\nexit\n")


# ---- the check script ------------------------------------------------------------------------


async def check_script(*args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(4 * PATIENCE):
        return await trio.run_process(
            [str(ROOT / "scripts" / "remote_check.sh"), *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env={**os.environ, "TRIO_ECHO_PYTHON": sys.executable},
        )


async def test_check_script_against_our_server(server: EchoServer) -> None:
    _, port = server.addresses[0]
    result = await check_script("127.0.0.1", str(port), "--pings", "3")
    assert result.returncode == 0
    assert "result: every required probe passed" in result.stdout.decode()


async def test_check_script_against_socat() -> None:
    async with socat_echo() as port:
        result = await check_script("127.0.0.1", str(port), "--timeout", "1")
    assert result.returncode == 0
    out = result.stdout.decode()
    assert "plain RFC 862 echo server (not a failure)" in out


async def test_check_script_against_a_closed_port() -> None:
    with closed_port() as port:
        result = await check_script("127.0.0.1", str(port))
    assert result.returncode == 1
    assert "connection refused" in result.stdout.decode()


async def test_check_script_against_a_filtered_port() -> None:
    with filtered_port() as port:
        result = await check_script("127.0.0.1", str(port), "--timeout", "0.5")
    assert result.returncode == 1
    assert "probably filtered" in result.stdout.decode()
