"""The check over UDP against our server, a closed port, a silent one, a path that drops IP
fragments, and a lossy one."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio

from tests.conftest import Recorder
from tests.test_check import by_name
from tests.test_udp import udp_server
from trio_echo.check import udp as udp_check
from trio_echo.check.udp import UdpChecker


@asynccontextmanager
async def odd_udp_echo(answers: Callable[[int, bytes], bool]) -> AsyncIterator[int]:
    """A UDP echo that answers the n-th datagram only if `answers(n, datagram)`."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))

    async def serve() -> None:
        n = 0
        while True:
            data, peer = await sock.recvfrom(65536)
            n += 1
            if answers(n, data):
                await sock.sendto(data, peer)

    with sock:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            yield sock.getsockname()[1]
            nursery.cancel_scope.cancel()


async def test_our_udp_server_passes_and_loopback_carries_the_largest_datagram() -> None:
    async with udp_server(Recorder()) as server:
        [(host, port)] = server.udp_addresses
        report = await UdpChecker(host, port, pings=5).run()
    assert report.ok
    assert {p.status for p in report.probes} == {"PASS"}
    assert by_name(report)["datagram of 65507 bytes"].figure.startswith("65507 bytes back")
    assert by_name(report)["path MTU"].figure.startswith("path MTU 65535 ")


async def test_a_closed_port_is_refused_and_a_silent_one_filtered() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
        closed.bind(("127.0.0.1", 0))
        closed_port = closed.getsockname()[1]
    refused = await UdpChecker("127.0.0.1", closed_port, timeout=0.3).run()
    async with odd_udp_echo(lambda n, data: False) as silent_port:
        silent = await UdpChecker("127.0.0.1", silent_port, timeout=0.3).run()
    assert "refused: nothing listens on UDP port" in by_name(refused)["udp round trip"].diagnosis
    assert "UDP is filtered on the way" in by_name(silent)["udp round trip"].diagnosis
    assert not refused.ok
    assert not silent.ok
    causes = (by_name(refused)["udp round trip"].cause, by_name(silent)["udp round trip"].cause)
    assert causes == ("refused", "filtered")


async def test_a_path_that_drops_fragments_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on an Ethernet path (MTU 1,500, so 1,472 bytes fit one packet) whose firewall
    drops fragments; loopback itself never fragments (the lab shows a real one)."""
    monkeypatch.setattr(udp_check, "_route_mtu", lambda sock: 1500)
    async with odd_udp_echo(lambda n, data: len(data) <= 1472) as port:
        report = await UdpChecker("127.0.0.1", port, timeout=0.3, pings=3).run()
    probes = by_name(report)
    assert probes["datagram of 1472 bytes"].status == "PASS"
    for size in (8192, 65507):
        assert probes[f"datagram of {size} bytes"].status == "FAIL"
        assert (
            "IP fragments are dropped on the path" in probes[f"datagram of {size} bytes"].diagnosis
        )
        assert probes[f"datagram of {size} bytes"].cause == "fragments"
    assert probes["path MTU"].figure.startswith("path MTU 1500 ")


async def test_loss_above_the_threshold_fails() -> None:
    async with odd_udp_echo(lambda n, data: not data.startswith(b"ping") or n % 2 == 0) as port:
        report = await UdpChecker("127.0.0.1", port, timeout=0.3, pings=10).run()
    loss = by_name(report)["loss and rtt (10 datagrams)"]
    assert loss.status == "FAIL"
    assert "loss above 20%: 10 sent, 5 received, 50% loss" in loss.diagnosis
