"""The server behind a load balancer: PROXY headers (v1, v2, LOCAL) name the real client,
nothing after the header is lost, bad or missing headers and untrusted peers are turned away
with a reason, it works under TLS, and with a real HAProxy and our own --send-proxy."""

from __future__ import annotations

import contextlib
import ipaddress
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import Recorder, require_tool, said
from tests.processes import external_server, free_port, run_client, server_process
from tests.streams import receive_all, split
from tests.test_tls import pinned_context
from trio_echo import tls
from trio_echo.check import Checker
from trio_echo.events import Connected, Disconnected, Rejected, Stopped, Stopping, TlsEstablished
from trio_echo.proxy_header import build_v1, build_v2
from trio_echo.server import EchoServer, ProxyConfig, ServerConfig


@asynccontextmanager
async def behind_balancer(
    recorder: Recorder, proxy: ProxyConfig | None = None, **options: object
) -> AsyncIterator[EchoServer]:
    async with trio.open_nursery() as nursery:
        config = ServerConfig(port=0, proxy=proxy or ProxyConfig(), **options)  # type: ignore[arg-type]
        server = EchoServer(config, emit=recorder)
        await nursery.start(server.run)
        yield server
        server.stop()


async def exchange_after(server: EchoServer, pieces: list[bytes]) -> bytes:
    host, port = server.addresses[0]
    async with await trio.open_tcp_stream(host, port) as stream:
        with contextlib.suppress(trio.BrokenResourceError):  # if the server closed first
            for piece in pieces:
                await stream.send_all(piece)
                await trio.lowlevel.checkpoint()
            await stream.send_eof()
        return await receive_all(stream, [65536])


@given(
    version=st.sampled_from([1, 2]),
    payload=st.binary(max_size=3000),
    cuts=st.lists(st.integers(min_value=0, max_value=3100), max_size=6),
)
@settings(max_examples=40)
async def test_the_header_names_the_client_and_nothing_after_it_is_lost(
    version: int, payload: bytes, cuts: list[int]
) -> None:
    recorder = Recorder()
    source, destination = ("203.0.113.7", 4242), ("198.51.100.1", 7007)
    header = build_v1(source, destination) if version == 1 else build_v2(source, destination)
    async with behind_balancer(recorder) as server:
        echoed = await exchange_after(server, split(header + payload, cuts))
        [end] = await recorder.wait_for(Disconnected)
    assert echoed == payload.split(b"exit\n")[0] or end.reason == "exit"
    if b"exit" not in payload:
        assert echoed == payload
        assert end.bytes_in == len(payload)
    [connected] = recorder.of(Connected)
    assert connected.peer == "203.0.113.7:4242"
    assert str(connected.via).startswith("127.0.0.1:")


async def test_a_local_header_is_a_health_check_and_is_served() -> None:
    recorder = Recorder()
    async with behind_balancer(recorder) as server:
        assert await exchange_after(server, [build_v2(None, None), b"health\n"]) == b"health\n"
    [connected] = recorder.of(Connected)
    assert connected.health_check
    assert connected.peer == connected.via


async def rejection(
    pieces: list[bytes], close: bool = True, proxy: ProxyConfig | None = None
) -> Rejected:
    recorder = Recorder()
    async with behind_balancer(recorder, proxy) as server:
        host, port = server.addresses[0]
        async with await trio.open_tcp_stream(host, port) as stream:
            # The server may close first (an untrusted peer is turned away before it speaks).
            with contextlib.suppress(trio.BrokenResourceError):
                for piece in pieces:
                    await stream.send_all(piece)
                if close:
                    await stream.send_eof()
            [rejected] = await recorder.wait_for(Rejected)
            assert await receive_all(stream, [100]) == b""  # closed, nothing echoed
    assert not recorder.of(Connected)
    return rejected


async def test_no_header_is_explained_with_what_came_instead() -> None:
    rejected = await rejection([b"hello\n"])
    assert rejected.reason == "bad_proxy_header"
    assert said(rejected.detail) == (
        'it sent "hello\\n" instead of a PROXY header: is the balancer set to send-proxy '
        "(or send-proxy-v2)?"
    )


async def test_a_bad_a_truncated_and_a_missing_header() -> None:
    bad = await rejection([b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n"])
    assert "a bad PROXY header: '99999' is not a port number" in said(bad.detail)
    truncated = await rejection([build_v2(("192.0.2.1", 1), ("192.0.2.2", 2))[:20]])
    assert "closed before a whole header" in said(truncated.detail)
    missing = await rejection([b"PROX"], close=False, proxy=ProxyConfig(timeout=0.2))
    assert (
        said(missing.detail)
        == 'no PROXY header within 0.2 s (--proxy-timeout): it sent only "PROX"'
    )


async def test_only_trusted_balancers_may_send_a_header() -> None:
    elsewhere = (ipaddress.ip_network("10.0.0.0/8"),)
    header = build_v1(("192.0.2.9", 9), ("192.0.2.1", 1))
    rejected = await rejection([header], proxy=ProxyConfig(trusted=elsewhere))
    assert rejected.reason == "untrusted_proxy"
    recorder = Recorder()
    here = (ipaddress.ip_network("127.0.0.0/8"),)
    async with behind_balancer(recorder, ProxyConfig(trusted=here)) as server:
        header = build_v1(("192.0.2.9", 9), ("192.0.2.1", 1))
        assert await exchange_after(server, [header + b"trusted\n"]) == b"trusted\n"
    assert recorder.of(Connected)[0].peer == "192.0.2.9:9"


async def test_a_connection_still_sending_its_header_counts_and_stop_ends_it() -> None:
    recorder = Recorder()
    async with behind_balancer(recorder, max_connections=1) as server:
        host, port = server.addresses[0]
        async with await trio.open_tcp_stream(host, port) as slow:
            await slow.send_all(b"PROXY TCP4 ")  # and no more
            async with await trio.open_tcp_stream(host, port) as second:
                [rejected] = await recorder.wait_for(Rejected)
                assert rejected.reason == "max_connections"
                assert await receive_all(second, [100]) == b""
            server.stop()
            stopped = (await recorder.wait_for(Rejected, 2))[1]
            assert said(stopped.detail) == "the server is stopping"


async def test_the_header_comes_before_the_tls_handshake() -> None:
    recorder = Recorder()
    async with behind_balancer(recorder, tls=tls.server_tls()) as server:
        host, port = server.addresses[0]
        plain = await trio.open_tcp_stream(host, port)
        await plain.send_all(build_v2(("2001:db8::7", 443), ("2001:db8::1", 7007)))
        stream = trio.SSLStream(plain, pinned_context(), server_hostname="localhost")
        await stream.send_all(b"secret\n")
        assert await stream.receive_some(100) == b"secret\n"
        await stream.aclose()
        await recorder.wait_for(Disconnected)
    assert recorder.of(Connected)[0].peer == "[2001:db8::7]:443"
    assert recorder.of(TlsEstablished)


async def test_our_client_sends_a_header_for_a_source_it_claims() -> None:
    async with server_process("--proxy-protocol") as server:
        for version in ("v1", "v2"):
            result = await run_client(
                "--port", str(server.port), "--send-proxy", version,
                "--proxy-source", "198.18.7.7:7777", stdin=b"claimed\n",
            )  # fmt: skip
            assert (result.returncode, result.stdout) == (0, b"claimed\n")
            connected = json.loads(await server.log.until('"server.connected"'))
            assert connected["peer"] == "198.18.7.7:7777"


HAPROXY = """global
    maxconn 100
defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend echo
    bind 127.0.0.1:{front}
    default_backend fleet
backend fleet
    option tcp-check
    tcp-check send "health\\n"
    tcp-check expect string "health"
    server one 127.0.0.1:{back} send-proxy-v2 check check-send-proxy inter 200ms
"""


async def test_behind_a_real_haproxy_the_server_sees_the_real_client(tmp_path: Path) -> None:
    haproxy = require_tool("haproxy")
    async with server_process("--proxy-protocol") as server:
        front = free_port()
        config = tmp_path / "haproxy.cfg"
        config.write_text(HAPROXY.format(front=front, back=server.port))
        async with external_server([haproxy, "-f", str(config), "-db", "-V"], "will use epoll"):
            health = json.loads(await server.log.until('"health_check": true'))
            result = await run_client("--port", str(front), "--log-format", "json", stdin=b"hi\n")
            assert (result.returncode, result.stdout) == (0, b"hi\n")
            local = next(json.loads(line) for line in result.stderr.decode().splitlines()
                         if '"client.connected"' in line)["local"]  # fmt: skip
            while True:
                connected = json.loads(await server.log.until('"server.connected"'))
                if not connected["health_check"]:
                    break
    assert connected["peer"] == local  # the client itself, not HAProxy
    assert connected["via"] != local
    assert health["via"] == health["peer"]


async def test_a_drain_fails_health_checks_and_serves_everyone_until_it_ends() -> None:
    recorder = Recorder()
    async with trio.open_nursery() as nursery:
        server = EchoServer(
            ServerConfig(port=0, proxy=ProxyConfig(), drain_timeout=0.5), emit=recorder
        )
        await nursery.start(server.run)
        server.stop()  # SIGTERM's doing
        [stopping] = recorder.of(Stopping)
        assert stopping.drain == 0.5
        health = await exchange_after(server, [build_v2(None, None), b"health\n"])
        header = build_v1(("192.0.2.5", 5), ("192.0.2.1", 1))
        served = await exchange_after(server, [header + b"still served\n"])
        await recorder.wait_for(Stopped)
    assert health == b""  # the check fails: the balancer marks the server down
    assert served == b"still served\n"  # a client that comes meanwhile is served
    [rejected] = recorder.of(Rejected)
    assert rejected.reason == "draining"
    assert len(recorder.of(Stopping)) == 1


async def test_the_check_plays_the_balancer_and_workers_read_headers_too() -> None:
    async with server_process("--proxy-protocol", "--workers", "2", "--quiet") as server:
        checker = Checker("127.0.0.1", server.port, pings=3)
        checker.send_proxy, checker.proxy_source = "v2", ("198.18.9.9", 9999)
        report = await checker.run()
        peers = [json.loads(await server.log.until('"server.connected"'))["peer"] for _ in range(3)]
    assert report.ok, [p for p in report.probes if p.status == "FAIL"]
    assert set(peers) == {"198.18.9.9:9999"}
