"""systemd: the server under Debian's `systemd-socket-activate` (a real client echoes through
the handed socket, TCP and UDP), and a notify socket of the test's own (READY=1, STATUS=,
STOPPING=1)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest
import trio

from tests.conftest import require_tool
from tests.processes import SERVER, free_port, reading, run_client
from trio_echo import systemd

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("transport", ["tcp", "udp"])
async def test_socket_activation_serves_the_socket_systemd_bound(transport: str) -> None:
    activate = require_tool("systemd-socket-activate")
    port = free_port()
    datagram = ["--datagram"] if transport == "udp" else []
    process = await trio.lowlevel.open_process(
        [activate, *datagram, "-l", f"127.0.0.1:{port}", "-E", f"PYTHONPATH={ROOT}",
         *SERVER, "--port", "0", "--log-format", "json"],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    try:
        async with reading(process.stderr) as log:
            await log.until(f"Listening on 127.0.0.1:{port}")  # systemd's side, bound
            # The first contact starts the server (which finds the socket as descriptor 3).
            udp = ["--udp"] if transport == "udp" else []
            client = await run_client(*udp, "--port", str(port), stdin=b"through systemd\n")
            assert (client.returncode, client.stdout) == (0, b"through systemd\n")
            listening = json.loads(await log.until('"server.listening"'))
            process.send_signal(signal.SIGTERM)
            await log.until('"server.stopped"')
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()
    assert (listening["port"], listening["transport"], listening["activated"]) == (
        port,
        transport,
        True,
    )
    assert "a socket handed over by systemd" in listening["message"]


async def test_readiness_status_and_stopping_are_notified(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(path)
        notify.setblocking(False)
        said: list[str] = []

        async def next_message() -> str:
            with trio.fail_after(15):
                while True:
                    try:
                        said.append(notify.recv(4096).decode())
                        return said[-1]
                    except BlockingIOError:
                        await trio.lowlevel.wait_readable(notify)

        process = await trio.lowlevel.open_process(
            [*SERVER, "--port", "0", "--log-format", "json"],
            stderr=subprocess.DEVNULL,
            env={**os.environ, "NOTIFY_SOCKET": path},
        )
        try:
            assert await next_message() == "READY=1"
            assert await next_message() == "STATUS=0 clients connected"
            process.send_signal(signal.SIGTERM)
            assert await next_message() == "STOPPING=1"
            assert await process.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()


def test_sockets_meant_for_another_process_are_left_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LISTEN_PID", str(os.getpid() + 1))
    monkeypatch.setenv("LISTEN_FDS", "1")
    assert systemd.listen_sockets() == []
    assert "LISTEN_FDS" not in os.environ  # no child of ours takes them either
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.notify("READY=1") is False
