"""Access control (`--allow`, `--deny`): the rules alone, then a real server judging TCP, the
HTTP port, UDP and IPv6 clients, and the real client behind a trusted PROXY header."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import Recorder
from trio_echo.access import AccessRules
from trio_echo.events import Connected, Disconnected, Rejected, UdpDropped
from trio_echo.server import EchoServer, HttpConfig, ProxyConfig, ServerConfig, UdpConfig


def rules(allow: tuple[str, ...] = (), deny: tuple[str, ...] = ()) -> AccessRules:
    return AccessRules(
        allow=tuple(ipaddress.ip_network(n) for n in allow),
        deny=tuple(ipaddress.ip_network(n) for n in deny),
    )


def test_the_rules() -> None:
    assert rules().allows("192.0.2.1")
    assert not rules(deny=("192.0.2.0/24",)).allows("192.0.2.1")
    assert rules(deny=("192.0.2.0/24",)).allows("198.51.100.1")
    assert rules(allow=("192.0.2.0/24",)).allows("192.0.2.200")
    assert not rules(allow=("192.0.2.0/24",)).allows("198.51.100.1")
    assert not rules(allow=("192.0.2.0/24",), deny=("192.0.2.7/32",)).allows("192.0.2.7")
    assert not rules(deny=("192.0.2.0/24",)).allows("::ffff:192.0.2.9")  # dual-stack
    assert not rules(deny=("2001:db8::/32",)).allows("2001:db8::1")
    assert rules(allow=("2001:db8::/32",)).allows("2001:db8:0:1::5")
    assert rules(deny=("0.0.0.0/0", "::/0")).allows("")  # no address: a Unix socket


@given(
    address=st.ip_addresses(),
    allow=st.lists(st.ip_addresses().map(ipaddress.ip_network), max_size=3),
    deny=st.lists(st.ip_addresses().map(ipaddress.ip_network), max_size=3),
)
def test_deny_wins_and_allow_is_a_whitelist(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
    allow: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
    deny: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> None:
    verdict = AccessRules(allow=tuple(allow), deny=tuple(deny)).allows(str(address))
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a dual-stack socket's IPv4 client is judged as IPv4
    denied = any(address in network for network in deny)
    allowed = not allow or any(address in network for network in allow)
    assert verdict == (allowed and not denied)


@asynccontextmanager
async def guarded(recorder: Recorder, **options: Any) -> AsyncIterator[EchoServer]:
    access = rules(allow=options.pop("allow", ()), deny=options.pop("deny", ()))
    config = ServerConfig(port=0, shutdown_timeout=2, access=access, **options)
    async with trio.open_nursery() as nursery:
        server = EchoServer(config, emit=recorder)
        await nursery.start(server.run)
        yield server
        server.stop()


async def echo_from(source: str, address: tuple[str, int], payload: bytes = b"hi\n") -> bytes:
    """Connect from `source` (a loopback address of ours), send, half-close, read all."""
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    await sock.bind((source, 0))
    await sock.connect(address)
    stream = trio.SocketStream(sock)
    got = b""
    with trio.fail_after(10):
        async with stream:
            try:
                await stream.send_all(payload)
                await stream.send_eof()
                while data := await stream.receive_some(65536):
                    got += data
            except trio.BrokenResourceError:
                pass
    return got


async def test_a_denied_client_is_closed_at_once_and_others_served(recorder: Recorder) -> None:
    async with guarded(recorder, deny=("127.0.0.2/32",)) as server:
        address = server.addresses[0]
        assert await echo_from("127.0.0.2", address) == b""
        assert await echo_from("127.0.0.1", address) == b"hi\n"
    [rejected] = recorder.of(Rejected)
    assert (rejected.reason, rejected.peer is not None and rejected.peer[:10]) == (
        "denied",
        "127.0.0.2:",
    )
    assert [c.peer[:10] for c in recorder.of(Connected) if c.peer] == ["127.0.0.1:"]


async def test_allow_is_a_whitelist_on_the_http_port_too(recorder: Recorder) -> None:
    async with guarded(recorder, allow=("127.0.0.3/32",), http=HttpConfig(port=0)) as server:
        request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        assert await echo_from("127.0.0.1", server.addresses[0]) == b""
        assert await echo_from("127.0.0.1", server.http_addresses[0], request) == b""
        assert (await echo_from("127.0.0.3", server.http_addresses[0], request)).startswith(
            b"HTTP/1.1 200 "
        )
    assert [r.reason for r in recorder.of(Rejected)] == ["denied", "denied"]


async def test_ipv6_clients_are_judged_too(recorder: Recorder) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    async with guarded(recorder, host="::1", deny=("::1/128",)) as server:
        assert await echo_from("::1", server.addresses[0]) == b""
    assert [r.reason for r in recorder.of(Rejected)] == ["denied"]


async def test_behind_a_trusted_balancer_the_real_client_is_judged(recorder: Recorder) -> None:
    proxy = ProxyConfig(trusted=(ipaddress.ip_network("127.0.0.1/32"),))
    async with guarded(recorder, proxy=proxy, deny=("198.18.0.9/32",)) as server:
        address = server.addresses[0]
        header = "PROXY TCP4 {} 127.0.0.1 5555 7007\r\n"
        denied = await echo_from("127.0.0.1", address, header.format("198.18.0.9").encode())
        served = await echo_from("127.0.0.1", address, header.format("198.18.0.10").encode())
        # A balancer we do not trust is refused for that, before any address is believed.
        untrusted = await echo_from("127.0.0.2", address, header.format("198.18.0.10").encode())
    assert (denied, served, untrusted) == (b"", b"", b"")
    assert [r.reason for r in recorder.of(Rejected)] == ["denied", "untrusted_proxy"]
    [connected] = recorder.of(Connected)
    assert connected.peer == "198.18.0.10:5555"


async def test_a_denied_datagram_is_dropped_and_counted(recorder: Recorder) -> None:
    udp = UdpConfig(rate=None)
    async with guarded(recorder, udp=udp, tcp=False, deny=("127.0.0.2/32",)) as server:
        host, port = server.udp_addresses[0]
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as allowed:
            await allowed.bind(("127.0.0.1", 0))
            with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as denied:
                await denied.bind(("127.0.0.2", 0))
                await denied.sendto(b"let me in", (host, port))
                await allowed.sendto(b"hello", (host, port))
                with trio.fail_after(10):
                    assert await allowed.recv(100) == b"hello"
    [dropped] = recorder.of(UdpDropped)  # reported at the end at the latest
    assert dropped.reasons == {"denied": 1}


async def test_max_bytes_ends_a_session_after_echoing_what_it_read(recorder: Recorder) -> None:
    async with guarded(recorder, max_bytes=10) as server:
        host, port = server.addresses[0]
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            got = b""
            await stream.send_all(b"0123456789ABCDEF")  # past the limit in one read
            with trio.fail_after(10):
                while data := await stream.receive_some(65536):
                    got += data
        [ended] = await recorder.wait_for(Disconnected)
    assert got == b"0123456789ABCDEF"  # nothing it sent was lost
    assert (ended.reason, ended.bytes_in, ended.bytes_out) == ("max_bytes", 16, 16)


async def test_max_duration_ends_a_session_between_two_echoes(
    recorder: Recorder, autojump_clock: trio.testing.MockClock
) -> None:
    config = ServerConfig(port=0, max_duration=30)
    server = EchoServer(config, emit=recorder)
    client, server_side = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:

        async def talk() -> None:
            with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                for _ in range(100):  # a line every 7 s, for longer than 30 s
                    await client.send_all(b"tick\n")
                    assert await client.receive_some(5) == b"tick\n"
                    await trio.sleep(7)

        nursery.start_soon(talk)
        began = trio.current_time()
        reason = await server.handle(server_side)
        took = trio.current_time() - began
        nursery.cancel_scope.cancel()
    assert reason == "max_duration"
    assert took == 30  # the mock clock is exact
    [ended] = recorder.of(Disconnected)
    assert ended.bytes_in == ended.bytes_out == 5 * 5  # at 0, 7, 14, 21 and 28 s
