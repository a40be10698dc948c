"""The UDP echo: the guards as sans-IO models, and a real server on loopback: byte-exact
datagrams of every size, no amplification, the loop guard, the rate limit under a flood
from many sources, broadcast in a namespace of its own, and shutdown."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import Recorder, require_tool
from tests.processes import SERVER
from tests.test_sockets import ipv6_available
from trio_echo.events import Datagram, Listening, Stopped, UdpDropped
from trio_echo.server import EchoServer, ServerConfig, UdpConfig
from trio_echo.udp import (
    REPEAT_LIMIT,
    DropTally,
    RateLimiter,
    RepeatGuard,
    is_broadcast_or_multicast,
)

# ---- the guards as models -------------------------------------------------------------------

steps = st.lists(
    st.tuples(st.integers(min_value=0, max_value=9), st.floats(min_value=0, max_value=0.5)),
    max_size=300,
)


@given(steps=steps, rate=st.floats(min_value=1, max_value=50))
def test_no_source_is_answered_more_than_its_rate_allows(
    steps: list[tuple[int, float]], rate: float
) -> None:
    """Over any run, a source gets at most a burst plus `rate` a second; and one that keeps
    to its rate is never refused."""
    limiter = RateLimiter(rate)
    now, allowed = 0.0, Counter[int]()
    for source, pause in steps:
        now += pause
        allowed[source] += limiter.allow(f"10.0.0.{source}", now)
    for count in allowed.values():
        assert count <= limiter.burst + rate * now + 1e-6
    polite = RateLimiter(rate)
    assert all(polite.allow("192.0.2.1", i / rate) for i in range(100))


@given(
    sources=st.lists(st.integers(min_value=0, max_value=10_000), max_size=400),
    table=st.integers(min_value=1, max_value=50),
)
def test_a_flood_from_countless_sources_cannot_grow_the_table(
    sources: list[int], table: int
) -> None:
    """At one instant (a flood), new sources beyond the table share one bucket: the table
    stays bounded and the flood as a whole gets no more than one burst per entry plus one."""
    limiter = RateLimiter(10, max_sources=table)
    answered = sum(limiter.allow(f"src{n}", 0.0) for n in sources)
    assert len(limiter) <= table
    assert answered <= limiter.burst * (table + 1)


def test_a_source_whose_bucket_is_full_again_is_forgotten_first() -> None:
    limiter = RateLimiter(10, max_sources=2)
    assert limiter.allow("a", 0.0)
    assert limiter.allow("b", 0.0)
    assert limiter.allow("c", 5.0)  # a's bucket is full again by now: a is forgotten
    assert len(limiter) == 2


def test_drops_are_reported_at_most_once_a_second() -> None:
    tally = DropTally()
    tally.add("rate_limit", "127.0.0.2")
    first = tally.report(10.0)
    assert first is not None
    assert (first.count, first.reasons) == (1, {"rate_limit": 1})
    for _ in range(1000):
        tally.add("loop_guard", "127.0.0.3")
    assert tally.report(10.5) is None  # not yet
    second = tally.report(11.0)
    assert second is not None
    assert (second.count, second.top_sources) == (1000, ["127.0.0.3 (1000)"])


@pytest.mark.parametrize(
    ("destination", "local", "group"),
    [
        ("127.0.0.1", "127.0.0.1", False),
        ("198.18.9.255", "198.18.9.1", True),  # a subnet's broadcast address
        ("255.255.255.255", "198.18.9.1", True),
        ("224.0.0.1", "198.18.9.1", True),
        ("ff02::1", "ff02::1", True),
        ("::1", "::1", False),
        ("127.0.0.1", "0.0.0.0", False),  # queued before IP_PKTINFO: no local address
        ("224.0.0.1", "0.0.0.0", True),
    ],
)
def test_broadcast_and_multicast_are_told_apart_from_unicast(
    destination: str, local: str, group: bool
) -> None:
    family = socket.AF_INET6 if ":" in destination else socket.AF_INET
    packed = socket.inet_pton(family, destination), socket.inet_pton(family, local)
    assert is_broadcast_or_multicast(*packed) is group


# ---- a real server on loopback --------------------------------------------------------------


@asynccontextmanager
async def udp_server(
    recorder: Recorder, udp: UdpConfig | None = None, **options: object
) -> AsyncIterator[EchoServer]:
    async with trio.open_nursery() as nursery:
        config = ServerConfig(port=0, udp=udp or UdpConfig(), **options)  # type: ignore[arg-type]
        server = EchoServer(config, emit=recorder)
        await nursery.start(server.run)
        yield server
        server.stop()


def datagram_socket(host: str = "127.0.0.1", port: int = 0) -> trio.socket.SocketType:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    return sock


async def answers(sock: trio.socket.SocketType, count: int) -> list[bytes]:
    """The next `count` datagrams (the test knows from the server's counters how many)."""
    with trio.fail_after(10):
        return [(await sock.recvfrom(70_000))[0] for _ in range(count)]


async def test_datagrams_of_every_size_come_back_byte_exact_one_for_one() -> None:
    recorder = Recorder()
    payloads = [b"", b"x", b"hello\n", b"exit\n", os.urandom(1472), os.urandom(8192)]
    payloads.append(os.urandom(65_507))  # the largest over IPv4
    async with udp_server(recorder) as server:
        [(host, port)] = server.udp_addresses
        assert port == server.addresses[0][1]  # the same port as TCP
        with datagram_socket() as sock:
            await sock.bind(("127.0.0.1", 0))
            for payload in payloads:
                await sock.sendto(payload, (host, port))
                assert await answers(sock, 1) == [payload]
    [stopped] = recorder.of(Stopped)
    sizes = sum(map(len, payloads))
    assert (stopped.datagrams_in, stopped.datagrams_out) == (len(payloads), len(payloads))
    assert stopped.udp_bytes_in == stopped.udp_bytes_out == sizes
    assert [e.transport for e in recorder.of(Listening)] == ["tcp", "udp"]
    assert [e.bytes for e in recorder.of(Datagram)] == [len(p) for p in payloads]


async def test_the_loop_guard_drops_low_source_ports_unless_allowed() -> None:
    if os.geteuid() != 0:
        pytest.skip("binding a port below 1024 needs root")
    for allow in (False, True):
        recorder = Recorder()
        async with udp_server(recorder, UdpConfig(allow_low_ports=allow)) as server:
            [(host, port)] = server.udp_addresses
            with datagram_socket() as low:
                await low.bind(("127.0.0.1", 999))  # where a service would live
                await low.sendto(b"bounce me", (host, port))
                if allow:
                    assert await answers(low, 1) == [b"bounce me"]
                else:
                    await recorder.wait_for(UdpDropped)
        [stopped] = recorder.of(Stopped)
        assert stopped.datagrams_in == 1
        assert stopped.datagrams_out == (1 if allow else 0)
        if not allow:
            [dropped] = recorder.of(UdpDropped)
            assert dropped.reasons == {"loop_guard": 1}


async def test_a_flood_from_many_sources_is_held_to_the_rate_while_another_is_served() -> None:
    """200 addresses of 127.0.0.0/8 send 40 datagrams each, in rounds as fast as the server
    takes them (so that the kernel drops none); each source gets its burst (rate 5/s) and
    little more, the rate-limit table stays bounded, and a polite source still gets every
    echo."""
    recorder = Recorder()
    rate = 5.0
    async with udp_server(recorder, UdpConfig(rate=rate), data_events=False) as server:
        [(host, port)] = server.udp_addresses
        endpoint = server.udp_endpoints[0]
        flooders = [plain_socket(f"127.0.0.{2 + n}") for n in range(200)]
        began = trio.current_time()
        for i in range(40):
            for sock in flooders:
                sock.sendto(b"flood %d" % i, (host, port))
                if flooders.index(sock) % 50 == 49:
                    await trio.testing.wait_all_tasks_blocked()  # the server took them all
        elapsed = trio.current_time() - began
        assert endpoint.counts.datagrams_in == 200 * 40
        per_source = [len(drain(sock)) for sock in flooders]
        assert max(per_source) <= rate + rate * elapsed + 1
        assert sum(per_source) == endpoint.counts.datagrams_out
        polite = plain_socket("127.1.0.1")
        for i in range(3):
            polite.sendto(b"polite %d" % i, (host, port))
            await trio.testing.wait_all_tasks_blocked()
            assert drain(polite) == [b"polite %d" % i]
        assert len(endpoint.limiter) <= 201
        for sock in [*flooders, polite]:
            sock.close()
    dropped = recorder.of(UdpDropped)
    assert sum(event.reasons.get("rate_limit", 0) for event in dropped) == 8000 - sum(per_source)
    assert len(dropped) <= 2 + elapsed  # at most one report a second (and one at the end)


def plain_socket(address: str) -> socket.socket:
    """A non-blocking client socket: loopback delivers at once, so answers can be read
    without waiting once the server has sent them."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind((address, 0))
    return sock


def drain(sock: socket.socket) -> list[bytes]:
    got = []
    while True:
        try:
            got.append(sock.recv(70_000))
        except BlockingIOError:
            return got


async def test_stop_ends_the_udp_service_and_says_what_it_did() -> None:
    recorder = Recorder()
    async with udp_server(recorder, tcp=False) as server:
        assert server.addresses == []
        [(host, port)] = server.udp_addresses
        with datagram_socket() as sock:
            await sock.bind(("127.0.0.1", 0))
            await sock.sendto(b"one", (host, port))
            assert await answers(sock, 1) == [b"one"]
    [stopped] = recorder.of(Stopped)
    assert (stopped.datagrams_in, stopped.datagrams_out) == (1, 1)


# ---- random datagram scripts against the model ---------------------------------------------


@given(
    script=st.lists(
        st.tuples(st.integers(min_value=0, max_value=3), st.binary(max_size=3000)),
        min_size=1,
        max_size=30,
    )
)
@settings(max_examples=40)
async def test_every_answered_datagram_is_answered_byte_exact_once(
    script: list[tuple[int, bytes]],
) -> None:
    """Up to four sources send random datagrams; with a rate limit small enough to bite,
    what comes back to each source is a sub-multiset of what it sent (byte-exact, never
    twice), and as many as the server says it answered."""
    recorder = Recorder()
    async with udp_server(recorder, UdpConfig(rate=4.0), data_events=False) as server:
        [(host, port)] = server.udp_addresses
        socks = [plain_socket(f"127.0.9.{n + 1}") for n in range(4)]
        sent: list[Counter[bytes]] = [Counter() for _ in socks]
        for source, payload in script:
            socks[source].sendto(payload, (host, port))
            sent[source][payload] += 1
        await trio.testing.wait_all_tasks_blocked()  # the server has answered what it will
        endpoint = server.udp_endpoints[0]
        got = [Counter(drain(sock)) for sock in socks]
        for sock in socks:
            sock.close()
    assert endpoint.counts.datagrams_in == len(script)
    assert sum(sum(c.values()) for c in got) == endpoint.counts.datagrams_out
    for n in range(4):
        assert not got[n] - sent[n]  # nothing that was not sent, nothing twice


# ---- broadcast, in a namespace of our own ---------------------------------------------------

NS = "trio-echo-udp-test"


async def test_a_broadcast_datagram_is_not_answered() -> None:
    """In a namespace made for this test (198.18.9.1/24 on a veth pair inside it), a datagram
    to the subnet's broadcast address is dropped and one to the host is answered."""
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("CI runs as root, and must run this")
        pytest.skip("needs root, for a network namespace")
    ip = require_tool("ip")
    await trio.run_process([ip, "netns", "del", NS], capture_stderr=True, check=False)
    await trio.run_process([ip, "netns", "add", NS])
    try:
        for command in (
            ["link", "set", "lo", "up"],
            ["link", "add", "v0", "type", "veth", "peer", "name", "v1"],
            ["addr", "add", "198.18.9.1/24", "brd", "+", "dev", "v0"],
            ["link", "set", "v0", "up"],
            ["link", "set", "v1", "up"],
        ):
            await trio.run_process([ip, "-n", NS, *command])
        inside = [ip, "netns", "exec", NS]
        env = {**os.environ, "PYTHONPATH": os.getcwd()}
        server = await trio.lowlevel.open_process(
            [*inside, *SERVER, "--udp", "--no-tcp", "--host", "0.0.0.0", "--port", "7009",
             "--log-format", "json"],
            stderr=subprocess.PIPE, env=env,
        )  # fmt: skip
        try:
            assert server.stderr is not None
            seen = b""
            with trio.fail_after(15):
                while b'"server.listening"' not in seen:
                    seen += await server.stderr.receive_some(65536)
                send = (
                    "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                    "s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1); "
                    "s.sendto(b'to everyone', ('198.18.9.255', 7009)); "
                    "s.sendto(b'to you', ('198.18.9.1', 7009)); s.settimeout(5); "
                    "print(s.recvfrom(100)[0].decode())"
                )
                answered = await trio.run_process(
                    [*inside, sys.executable, "-c", send], capture_stdout=True, env=env
                )
                assert answered.stdout.decode().strip() == "to you"
                while b'"server.udp_dropped"' not in seen:
                    seen += await server.stderr.receive_some(65536)
        finally:
            server.terminate()
            await server.wait()
        records = [json.loads(line) for line in seen.decode().splitlines() if line]
        [dropped] = [r for r in records if r["event"] == "server.udp_dropped"]
        assert dropped["reasons"] == {"broadcast": 1}
    finally:
        with trio.CancelScope(shield=True):
            await trio.run_process([ip, "netns", "del", NS])


async def test_the_largest_datagram_over_ipv6() -> None:
    if not ipv6_available():
        pytest.skip("no IPv6 loopback")
    recorder = Recorder()
    payload = os.urandom(65_527)  # 65,535 less the UDP header: IPv6 counts no IP header
    async with udp_server(recorder, host="::1") as server:
        [(host, port)] = server.udp_addresses
        with trio.socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            await sock.bind(("::1", 0))
            await sock.sendto(payload, (host, port))
            assert await answers(sock, 1) == [payload]
    [stopped] = recorder.of(Stopped)
    assert stopped.udp_bytes_out == len(payload)


@given(
    payloads=st.lists(st.binary(max_size=20), min_size=1, max_size=200),
    pause=st.floats(min_value=0.0, max_value=0.3),
)
def test_the_repeat_guard_never_drops_a_datagram_unlike_the_one_before(
    payloads: list[bytes], pause: float
) -> None:
    guard = RepeatGuard(limit=8, gap=0.5)
    now = 0.0
    previous = None
    for data in payloads:
        now += pause
        allowed = guard.allow(("192.0.2.1", 7007), data, now)
        if data != previous:
            assert allowed
        previous = data


def test_the_repeat_guard_drops_a_bounce_until_the_peer_pauses() -> None:
    guard = RepeatGuard(limit=8, gap=0.5)
    peer = ("192.0.2.1", 7007)
    answered = [guard.allow(peer, b"bounced", i * 0.001) for i in range(20)]
    assert answered == [True] * 8 + [False] * 12
    assert guard.allow(("192.0.2.2", 7007), b"bounced", 0.02)  # another peer: its own count
    assert guard.allow(peer, b"bounced", 0.02 + 0.5)  # after a pause it is heard again


async def test_an_echo_loop_with_another_echo_server_is_broken_without_a_rate_limit() -> None:
    """Two echo services bounce one datagram between them for ever (with --udp-rate 0), or
    1,156 times each before the rate limit stops it (issue 24, 17). The other one here is the
    plainest echo there is, bounded by the test; ours stops answering after REPEAT_LIMIT."""
    recorder = Recorder()
    config = ServerConfig(port=0, tcp=False, udp=UdpConfig(rate=None), data_events=False)
    bounces = 0
    async with trio.open_nursery() as nursery:
        server = await nursery.start(EchoServer(config, emit=recorder).run)
        host, port = server.udp_addresses[0]
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
            await other.bind(("127.0.0.1", 0))
            await other.sendto(b"one datagram, spoofed or not", (host, port))
            with trio.move_on_after(2):  # quiet for that long: the loop is over
                while bounces < 5000:  # the bound, were it never to stop
                    data, peer = await other.recvfrom(65536)
                    with trio.move_on_after(2) as quiet:
                        await other.sendto(data, peer)
                    bounces += 1
                    if quiet.cancelled_caught:
                        break
        server.stop()
    assert bounces == REPEAT_LIMIT  # then nothing more came back
    [stopped] = recorder.of(Stopped)
    assert stopped.datagrams_out == REPEAT_LIMIT
