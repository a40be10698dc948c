"""UDP with programs no one here wrote: `nc -u` and `socat - UDP:` against our server; our
client and check against `socat UDP-RECVFROM:...,fork PIPE` and xinetd's internal echo."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.conftest import Recorder, require_tool
from tests.processes import external_server, free_port, run_client
from tests.test_interop import run
from tests.test_udp import udp_server
from trio_echo.check.probes import Report
from trio_echo.check.udp import UdpChecker
from trio_echo.events import Datagram

LINES = b"hello\nfrom a foreign client\n"


async def test_openbsd_nc_u_gets_its_datagrams_back() -> None:
    recorder = Recorder()
    async with udp_server(recorder, tcp=False) as server:
        [(_, port)] = server.udp_addresses
        # nc -u never knows the exchange is over: -w 1 ends it after a second of silence.
        result = await run([require_tool("nc"), "-u", "-w", "1", "127.0.0.1", str(port)], LINES)
    assert result.stdout == LINES
    assert sum(event.bytes for event in recorder.of(Datagram)) == len(LINES)


async def test_socat_udp_gets_its_datagram_back() -> None:
    recorder = Recorder()
    async with udp_server(recorder, tcp=False) as server:
        [(_, port)] = server.udp_addresses
        result = await run([require_tool("socat"), "-T", "1", "-", f"UDP:127.0.0.1:{port}"], LINES)
    assert result.stdout == LINES


@asynccontextmanager
async def socat_udp_echo() -> AsyncIterator[int]:
    port = free_port()
    argv = [require_tool("socat"), "-d", "-d", f"UDP-RECVFROM:{port},bind=127.0.0.1,fork", "PIPE"]
    async with external_server(argv, "receiving on"):
        yield port


@asynccontextmanager
async def xinetd_udp_echo(tmp_path: Path) -> AsyncIterator[int]:
    """xinetd's built-in RFC 862 echo over UDP (`socket_type = dgram`, `wait = yes`)."""
    xinetd = require_tool("xinetd")
    if os.geteuid() != 0:
        pytest.skip("xinetd needs root")
    port = free_port()
    config = tmp_path / "xinetd-udp.conf"
    config.write_text(
        "defaults\n{\n}\nservice echo\n{\n    type = INTERNAL UNLISTED\n    id = echo-dgram\n"
        "    socket_type = dgram\n    protocol = udp\n    user = root\n    wait = yes\n"
        f"    port = {port}\n    bind = 127.0.0.1\n}}\n"
    )
    argv = [xinetd, "-dontfork", "-f", str(config), "-pidfile", str(tmp_path / "pid")]
    async with external_server([*argv, "-filelog", "/dev/stderr"], "Started working: 1"):
        yield port


@pytest.mark.parametrize("peer", ["socat UDP-RECVFROM PIPE", "xinetd echo dgram"])
async def test_our_client_and_check_with_a_foreign_udp_echo(peer: str, tmp_path: Path) -> None:
    server = socat_udp_echo() if peer.startswith("socat") else xinetd_udp_echo(tmp_path)
    async with server as port:
        piped = await run_client("--udp", "--port", str(port), "--quiet", stdin=LINES)
        report: Report = await UdpChecker("127.0.0.1", port, timeout=1, pings=5).run()
    assert (piped.returncode, piped.stdout) == (0, LINES)
    statuses = {p.name: p.status for p in report.probes}
    assert statuses["udp round trip"] == "PASS"
    assert statuses["datagram of 1472 bytes"] == "PASS"
    assert statuses["path MTU"] == "PASS"
    # Neither echoes the largest datagram whole: both read into a smaller buffer (socat's -b,
    # 8,192 bytes by default; xinetd's internal echo, less), and the check says so.
    largest = next(p for p in report.probes if p.name == "datagram of 65507 bytes")
    assert largest.status == "FAIL"
    assert "the echo came back cut to " in largest.diagnosis
    print(
        f"\n{peer}: {largest.diagnosis}; "
        + next(p.figure for p in report.probes if p.name == "path MTU")
    )
