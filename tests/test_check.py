"""The check against good, plain, broken and unreachable echo servers."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio

from tests.conftest import closed_port, filtered_port
from trio_echo import tls
from trio_echo.check import Checker, probes
from trio_echo.check.probes import Report
from trio_echo.server import EchoServer, ServerConfig

Handler = Callable[[trio.SocketStream], Awaitable[None]]


@asynccontextmanager
async def odd_server(handler: Handler) -> AsyncIterator[int]:
    """A deliberately broken 'echo' server on loopback; yields its port."""
    async with trio.open_nursery() as nursery:
        [listener, *_] = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        yield listener.socket.getsockname()[1]
        nursery.cancel_scope.cancel()


def by_name(report: Report) -> dict[str, probes.Probe]:
    return {probe.name: probe for probe in report.probes}


async def test_our_server_passes_everything(server: EchoServer) -> None:
    host, port = server.addresses[0]
    report = await Checker(host, port, pings=5).run()
    assert report.ok
    assert [p.status for p in report.probes] == ["PASS"] * len(report.probes)
    assert by_name(report)["latency (5 pings)"].figure.startswith("rtt min/avg/max/mdev = ")
    assert "the server ended the session" in by_name(report)["exit"].figure


async def test_a_plain_echo_server_is_not_a_failure() -> None:
    async with trio.open_nursery() as nursery:
        plain = await nursery.start(EchoServer(ServerConfig(port=0, exit_command=False)).run)
        host, port = plain.addresses[0]
        report = await Checker(host, port, timeout=1).run()
        plain.stop()
    assert report.ok
    assert by_name(report)["exit"].status == "SKIP"
    assert "plain RFC 862 echo server" in by_name(report)["exit"].figure


async def test_refused() -> None:
    with closed_port() as port:
        report = await Checker("127.0.0.1", port).run()
    assert not report.ok
    connect = by_name(report)["connect"]
    assert connect.status == "FAIL"
    assert "connection refused" in connect.diagnosis
    assert connect.cause == "refused"
    assert {p.status for p in report.probes[2:]} == {"SKIP"}


async def test_filtered() -> None:
    with filtered_port() as port:
        report = await Checker("127.0.0.1", port, timeout=0.5).run()
    diagnosis = by_name(report)["connect"].diagnosis
    assert by_name(report)["connect"].cause == "filtered"
    assert "timed out connecting to 127.0.0.1:" in diagnosis
    assert "after 0.5 s: probably filtered" in diagnosis


async def test_unresolvable_name() -> None:
    report = await Checker("no-such-host.invalid", 7).run()
    assert "does not resolve" in by_name(report)["resolve"].diagnosis
    assert by_name(report)["connect"].status == "SKIP"


async def uppercase(stream: trio.SocketStream) -> None:
    while data := await stream.receive_some(65536):
        await stream.send_all(data.upper())


async def short(stream: trio.SocketStream) -> None:
    await stream.send_all((await stream.receive_some(10))[:10])


async def silent(stream: trio.SocketStream) -> None:
    while await stream.receive_some(65536):
        pass


@pytest.mark.parametrize(
    ("handler", "words"),
    [
        (uppercase, "wrong echo: differs from what was sent at byte 0"),
        (short, "short echo: "),
        (silent, "late or short echo: 0 of 12 bytes came back within 0.5 s"),
    ],
)
async def test_bad_echoes_are_diagnosed(handler: Handler, words: str) -> None:
    async with odd_server(handler) as port:
        report = await Checker("127.0.0.1", port, timeout=0.5, pings=2).run()
    assert not report.ok
    assert words in by_name(report)["short line"].diagnosis


def own_address() -> str | None:
    """A non-loopback address of this machine (UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("198.18.0.1", 9))
        except OSError:
            return None
        address: str = probe.getsockname()[0]
    return None if address.startswith("127.") else address


async def test_a_server_bound_to_loopback_only_is_pointed_out(server: EchoServer) -> None:
    address = own_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address")
    _, port = server.addresses[0]
    report = await Checker(address, port).run()
    assert "start it with --host 0.0.0.0" in by_name(report)["connect"].diagnosis


def test_payload_has_no_exit_line() -> None:
    payload = probes.payload_without_exit(4096, seed=1)
    assert len(payload) == 4096
    assert b"\n" in payload


async def test_over_tls_every_probe_passes_and_without_tls_the_port_is_named_tls() -> None:
    settings = tls.server_tls()
    async with trio.open_nursery() as nursery:
        secured = await nursery.start(EchoServer(ServerConfig(port=0, tls=settings)).run)
        host, port = secured.addresses[0]
        pinned = tls.client_tls(pinned=settings.fingerprint)
        report = await Checker(host, port, pings=3, tls_settings=pinned).run()
        plain = await Checker(host, port, pings=3, timeout=1).run()
        secured.stop()
    assert report.ok
    assert [p.status for p in report.probes] == ["PASS"] * len(report.probes)
    assert "the pinned fingerprint matches" in by_name(report)["tls"].figure
    assert "the server ended the session" in by_name(report)["exit"].figure
    assert not plain.ok
    assert "this port speaks TLS" in by_name(plain)["short line"].diagnosis
    assert settings.fingerprint in by_name(plain)["short line"].diagnosis


async def test_an_echo_with_bytes_added_in_the_same_read_is_a_wrong_echo_not_a_crash() -> None:
    """The check compared the echo by zip, which stops at the shorter: extra bytes in the same
    read as the echo raised StopIteration in a coroutine (issue 24, 10)."""

    async def echo_and_more(stream: trio.SocketStream) -> None:
        line = b""
        while data := await stream.receive_some(65536):  # each line back, and 2 bytes more,
            line += data  # in one write, however the line came in
            if line.endswith(b"\n"):
                await stream.send_all(line + b"!!")
                line = b""

    async with odd_server(echo_and_more) as port:
        report = await Checker("127.0.0.1", port, timeout=2, pings=2).run()
    short = by_name(report)["short line"]
    assert short.status == "FAIL"
    assert "2 bytes more than was sent" in short.diagnosis
    assert not report.ok
