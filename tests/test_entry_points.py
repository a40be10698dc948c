"""Both programs as a user runs them: logs, signals, exit statuses, errors."""

from __future__ import annotations

import json
import random
import re
import signal
import socket
import subprocess
import sys

import pytest
import trio

from tests.conftest import closed_port, filtered_port
from tests.processes import CLIENT, PATIENCE, SERVER, run_client, server_process
from tests.streams import send_until_blocked
from trio_echo import __version__

SERVER_LABELS = [
    "START", "LISTEN", "CONNECT", "RECEIVED", "SENT", "DISCONNECT", "STOPPING", "STOPPED"
]  # fmt: skip


def one_error_line(stderr: bytes, prog: str) -> str:
    """The error a program printed: exactly one line naming it, and no traceback."""
    text = stderr.decode()
    assert "Traceback" not in text
    errors = [line for line in text.splitlines() if line.startswith(f"{prog}: error:")]
    assert len(errors) == 1, text
    return errors[0]


async def test_text_log_explains_every_event_and_ctrl_c_exits_cleanly() -> None:
    async with server_process(json_log=False) as server:
        client = await run_client("--port", str(server.port), stdin=b"hello\nexit\n")
        assert client.returncode == 0
        assert client.stdout == b"hello\nexit\n"
        await server.log.until("DISCONNECT")
        server.process.send_signal(signal.SIGINT)
        lines = await server.log.rest()
        assert await server.process.wait() == 0
    labels = [line.split()[1] for line in lines]
    assert labels == SERVER_LABELS
    text = "\n".join(lines)
    assert "it sent the line `exit`" in text
    assert "SIGINT (Ctrl-C)" in text
    assert "Traceback" not in text


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_json_log_and_signals(signum: signal.Signals) -> None:
    async with server_process() as server:
        client = await run_client(
            "--port", str(server.port), "--log-format", "json", stdin=b"one\ntwo\n"
        )
        assert (client.returncode, client.stdout) == (0, b"one\ntwo\n")
        client_events = [json.loads(line) for line in client.stderr.decode().splitlines()]
        assert [e["event"] for e in client_events][:2] == ["client.connecting", "client.connected"]
        assert client_events[-1]["event"] == "client.disconnected"
        assert client_events[-1]["reason"] == "eof"
        await server.log.until('"server.disconnected"')
        server.process.send_signal(signum)
        lines = await server.log.rest()
        assert await server.process.wait() == 0
    records = [json.loads(line) for line in lines]
    by_event = {record["event"]: record for record in records}
    assert list(by_event) == [
        "server.starting",
        "server.listening",
        "server.connected",
        "server.received",
        "server.sent",
        "server.disconnected",
        "server.stopping",
        "server.stopped",
    ]
    assert by_event["server.listening"]["host"] == "127.0.0.1"
    assert by_event["server.listening"]["port"] == server.port
    assert by_event["server.connected"]["conn"] == 1
    assert by_event["server.connected"]["peer"].startswith("127.0.0.1:")
    assert by_event["server.received"]["bytes"] + 0 > 0
    assert by_event["server.disconnected"]["reason"] == "eof"
    assert by_event["server.stopping"]["reason"].startswith(signum.name)


async def test_a_second_ctrl_c_stops_at_once() -> None:
    async with server_process("--shutdown-timeout", "3600", "--quiet") as server:
        stuck = await trio.open_tcp_stream("127.0.0.1", server.port)
        await send_until_blocked(stuck)  # the server is stuck mid-echo
        server.process.send_signal(signal.SIGINT)
        await server.log.until('"server.stopping"')
        server.process.send_signal(signal.SIGINT)
        with trio.fail_after(10):
            assert await server.process.wait() == 0
        lines = await server.log.rest()
        assert json.loads(lines[-1])["event"] == "server.stopped"
        await stuck.aclose()


@pytest.mark.parametrize(
    "args",
    [
        ["--port", "70000"],
        ["--port", "http"],
        ["--chunk-size", "0"],
        ["--chunk-size", "1099511627776"],  # started, then every connection failed (issue 24)
        ["--log-format", "xml"],
        ["--shutdown-timeout", "-1"],
        ["--no-such-option"],
    ],
)
@pytest.mark.parametrize("program", ["server", "client"])
async def test_bad_arguments_exit_2_with_a_usage_line(program: str, args: list[str]) -> None:
    if program == "client" and args[0] in ("--chunk-size", "--shutdown-timeout"):
        args = ["--connect-timeout", "0"]
    command = SERVER if program == "server" else CLIENT
    with trio.fail_after(PATIENCE):  # a value wrongly taken starts a server that never ends
        result = await trio.run_process([*command, *args], capture_stderr=True, check=False)
    assert result.returncode == 2
    assert b"usage:" in result.stderr
    assert b"Traceback" not in result.stderr


@pytest.mark.parametrize("command", [SERVER, CLIENT], ids=["server", "client"])
async def test_version(command: list[str]) -> None:
    result = await trio.run_process([*command, "--version"], capture_stdout=True)
    assert __version__ in result.stdout.decode()


async def test_port_in_use_is_one_clear_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = await trio.run_process(
            [*SERVER, "--port", str(port)], capture_stderr=True, check=False
        )
    assert result.returncode == 1
    line = one_error_line(result.stderr, "trio-echo-server")
    assert line == (
        f"trio-echo-server: error: cannot listen on 127.0.0.1:{port}: address already in use"
    )


async def test_a_host_that_cannot_be_resolved_is_one_clear_line() -> None:
    result = await trio.run_process(
        [*SERVER, "--host", "no-such-host.invalid", "--port", "0"], capture_stderr=True, check=False
    )
    assert result.returncode == 1
    line = one_error_line(result.stderr, "trio-echo-server")
    assert "cannot listen on no-such-host.invalid:0" in line


async def test_client_connection_refused() -> None:
    with closed_port() as port:
        result = await run_client("--port", str(port))
    assert result.returncode == 1
    assert "connection refused by 127.0.0.1:" in one_error_line(result.stderr, "trio-echo-client")


async def test_client_unknown_host() -> None:
    result = await run_client("--host", "no-such-host.invalid")
    assert result.returncode == 1
    assert "cannot resolve host 'no-such-host.invalid'" in one_error_line(
        result.stderr, "trio-echo-client"
    )


async def test_client_connect_timeout() -> None:
    with filtered_port() as port:
        result = await run_client("--port", str(port), "--connect-timeout", "0.5")
    assert result.returncode == 1
    line = one_error_line(result.stderr, "trio-echo-client")
    assert "timed out connecting to 127.0.0.1:" in line
    assert "probably filtered" in line


async def test_client_notices_at_once_when_the_server_goes_away() -> None:
    async with server_process() as server:
        client = await trio.lowlevel.open_process(
            [*CLIENT, "--port", str(server.port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert client.stdin is not None
        assert client.stderr is not None
        await server.log.until('"server.connected"')
        server.process.send_signal(signal.SIGTERM)
        with trio.fail_after(15):
            status = await client.wait()  # its stdin is still open: no keystroke needed
        errors = (await client.stderr.receive_some(65536)).decode()
        await client.stdin.aclose()
    assert status == 1
    assert "the server closed the connection before the session was over" in errors


async def test_piping_many_mebibytes_through_the_client_returns_them_intact() -> None:
    lines = b"".join(b"line %d\n" % i for i in range(200_000))
    payload = random.Random(862).randbytes(8 << 20) + lines
    async with server_process("--quiet") as server:
        result = await run_client("--port", str(server.port), "--quiet", stdin=payload)
    assert result.returncode == 0
    assert result.stdout == payload


@pytest.mark.parametrize("program", ["server", "client", "check", "faulty_link"])
async def test_help_says_each_default_once_in_words(program: str) -> None:
    result = await trio.run_process(
        [sys.executable, "-m", f"trio_echo.{program}", "--help"], capture_stdout=True
    )
    text = " ".join(result.stdout.decode().split())  # argparse wraps lines anywhere
    for noise in ("(default: None)", "(default: True)", "(default: False)"):
        assert noise not in text
    assert text.count("(default:") == len(re.findall(r"\(default: [^)]*\)", text))
    assert not re.search(r"default[^()]*\([^)]*\) \(default:", text)  # never said twice


@pytest.mark.parametrize("delay", [0.06, 0.1, 0.15, 0.2, 0.3])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_a_stop_while_starting_up_is_a_clean_stop(delay: float, signum: int) -> None:
    """A signal in the middle of the imports was a KeyboardInterrupt traceback (or a SIGTERM
    death); whoever stops a server at once is owed status 0 (issue 24, 1 and 12)."""
    process = await trio.lowlevel.open_process(
        [*SERVER, "--port", "0"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL
    )
    assert process.stderr is not None
    try:
        await trio.sleep(delay)  # a moment in its start, not a synchronisation: any will do
        process.send_signal(signum)
        said = b""
        with trio.fail_after(PATIENCE):
            while chunk := await process.stderr.receive_some(65536):
                said += chunk
            status = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
    assert "Traceback" not in said.decode()
    assert status == 0, said.decode()


async def test_a_fleet_stopped_right_after_it_says_listening_stops_cleanly() -> None:
    """`--workers 2` says `listening` when its first worker is up; Ctrl-C then reached a
    worker still importing: a traceback, and 'worker 2 was killed by SIGINT', status 1."""
    for _ in range(3):
        async with server_process("--workers", "2") as server:
            server.process.send_signal(signal.SIGINT)
            lines = await server.log.rest()
            status = await server.process.wait()
        assert "Traceback" not in "\n".join(lines)
        assert status == 0, lines
