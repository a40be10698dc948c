"""Limits: max connections, idle timeout, and running out of file descriptors."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing

import trio_echo
from tests.conftest import Recorder
from tests.processes import server_process
from tests.streams import PAIRS, receive_all
from tests.test_sockets import connect, exchange
from trio_echo import tls
from trio_echo.eventlog import COPY_VARIABLE
from trio_echo.events import Connected, Disconnected, Rejected, says
from trio_echo.server import EchoServer, ProxyConfig, ServerConfig


async def test_past_max_connections_a_client_is_turned_away_and_others_are_unaffected() -> None:
    recorder = Recorder()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(trio_echo.serve, ServerConfig(port=0, max_connections=2), emit=recorder)
        )
        first, second = await connect(server), await connect(server)
        await recorder.wait_for(Connected, 2)
        async with await connect(server) as third:
            [rejected] = await recorder.wait_for(Rejected)
            assert (rejected.reason, rejected.active, rejected.limit) == ("max_connections", 2, 2)
            assert await receive_all(third, [100]) == b""  # closed at once
        assert await exchange(first, b"still served\n") == b"still served\n"
        await first.aclose()
        await recorder.wait_for(Disconnected)
        async with await connect(server) as fourth:  # room again
            assert await exchange(fourth, b"in again\n") == b"in again\n"
        await second.aclose()
        server.stop()
    assert len(recorder.of(Connected)) == 3


async def test_idle_timeout_closes_a_silent_client(autojump_clock: trio.testing.MockClock) -> None:
    recorder = Recorder()
    server = EchoServer(ServerConfig(idle_timeout=30), emit=recorder)
    client, server_side = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:

        async def talk_then_fall_silent() -> None:
            for _ in range(5):  # a line every 20 s (at 0, 20 ... 80 s): never idle for 30 s
                await client.send_all(b"still here\n")
                await trio.sleep(20)

        nursery.start_soon(talk_then_fall_silent)
        began = trio.current_time()
        reason = await server.handle(server_side)
        elapsed = trio.current_time() - began
    assert reason == "timeout"
    assert elapsed == 80 + 30  # the mock clock is exact: 30 s after the last line
    [end] = recorder.of(Disconnected)
    assert end.bytes_in == end.bytes_out == 5 * len(b"still here\n")


def low_descriptor_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (40, 40))


async def test_out_of_descriptors_is_reported_once_and_accepting_resumes(tmp_path: Path) -> None:
    # --max-connections above what 40 descriptors hold: the server must meet EMFILE (and
    # says at start that it will).
    args = ["--quiet", "--max-connections", "1000"]
    copy = tmp_path / "events.jsonl"
    env = {**os.environ, COPY_VARIABLE: str(copy)}
    async with server_process(*args, preexec_fn=low_descriptor_limit, env=env) as server:
        clients = []
        with trio.fail_after(30):
            for _ in range(60):  # more than 40 descriptors can hold
                clients.append(await trio.open_tcp_stream("127.0.0.1", server.port))
            paused = json.loads(await server.log.until('"server.accept_paused"'))
        assert "EMFILE" in paused["error"]
        # The clients it holds are still served.
        for stream in clients[:20]:
            assert await exchange(stream, b"ok\n") == b"ok\n"
        for stream in clients[:32]:  # room for the 28 waiting, with ours
            await stream.aclose()
        resumed = json.loads(await server.log.until('"server.accept_resumed"'))
        assert resumed["failures"] >= 1
        # Those that waited in the backlog get their echo now.
        for stream in clients[32:]:
            assert await exchange(stream, b"late\n") == b"late\n"
        pauses = [line for line in server.log.seen if '"server.accept_paused"' in line]
        assert len(pauses) == 1  # once per episode, not once per failed accept
        [warning] = [
            json.loads(line) for line in server.log.seen if '"server.limit_warning"' in line
        ]
        assert (warning["max_connections"], warning["fd_limit"]) == (1000, 40)
        server.process.send_signal(signal.SIGTERM)
        assert await server.process.wait() == 0
    # The JSON copy of the log (TRIO_ECHO_EVENT_COPY) was opened for each batch, so the first
    # batch written out of descriptors ended it: the audit trail was lost just when it mattered.
    copied = [json.loads(line)["event"] for line in copy.read_text().splitlines()]
    assert copied.count("server.accept_paused") == copied.count("server.accept_resumed") == 1
    assert copied[-1] == "server.stopped"


def soft_limit_low() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 4096))


async def test_the_soft_descriptor_limit_is_raised_and_sets_the_connection_limit() -> None:
    async with server_process("--quiet", preexec_fn=soft_limit_low) as server:
        [start] = [json.loads(line) for line in server.log.seen if '"server.starting"' in line]
        assert start["fd_limit"] == 4096  # raised from 256 to the hard limit
        assert start["max_connections"] == 4096 - 64
        assert "descriptor limit 4,096" in start["message"]
        assert not [line for line in server.log.seen if '"server.limit_warning"' in line]


@pytest.mark.parametrize("pair", ["lockstep", "socket"])
async def test_idle_timeout_ends_a_client_that_stops_reading_its_echo(
    pair: str, autojump_clock: trio.testing.MockClock
) -> None:
    """Its echo blocked in a shielded send with no deadline: no byte taken for the idle
    timeout now ends the session with a reason of its own (issue 24, 6)."""
    recorder = Recorder()
    server = EchoServer(ServerConfig(idle_timeout=30), emit=recorder)
    client, server_side = PAIRS[pair]()
    async with trio.open_nursery() as nursery:

        async def send_and_never_read() -> None:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await client.send_all(b"x" * (8 << 20))

        async def give_up() -> None:  # before: held for ever, past any cancel (shielded)
            await trio.sleep(300)
            await client.aclose()

        nursery.start_soon(send_and_never_read)
        nursery.start_soon(give_up)
        began = trio.current_time()
        reason = await server.handle(server_side)
        elapsed = trio.current_time() - began
        nursery.cancel_scope.cancel()
    assert reason == "stalled"
    assert 30 <= elapsed < 35  # the idle timeout, not the shutdown's or never
    [end] = recorder.of(Disconnected)
    assert end.reason == "stalled"
    assert end.bytes_out < end.bytes_in  # what it did not take stayed with the server


async def test_the_idle_timeout_bounds_the_proxy_header_and_the_tls_handshake_too() -> None:
    """A connection that sends nothing is idle in whatever phase it is: the shorter of the
    idle timeout and the phase's own bound applies (issue 24, 2)."""
    recorder = Recorder()
    config = ServerConfig(port=0, idle_timeout=0.2, proxy=ProxyConfig(timeout=30))
    async with trio.open_nursery() as nursery:
        server = await nursery.start(EchoServer(config, emit=recorder).run)
        host, port = server.addresses[0]
        async with await trio.open_tcp_stream(host, port):
            [rejected] = await recorder.wait_for(Rejected)
        server.stop()
    assert rejected.detail == says(
        "timeout",
        "no PROXY header within {seconds:g} s ({option})",
        seconds=0.2,
        option="--idle-timeout",
    )
    recorder = Recorder()
    config = ServerConfig(port=0, idle_timeout=0.2, tls=tls.server_tls())
    async with trio.open_nursery() as nursery:
        server = await nursery.start(EchoServer(config, emit=recorder).run)
        host, port = server.addresses[0]
        async with await trio.open_tcp_stream(host, port):
            [ended] = await recorder.wait_for(Disconnected)
        server.stop()
    assert ended.reason == "tls_error"
    assert ended.detail is not None
    assert (ended.detail.code, dict(ended.detail.args)["option"]) == (
        "handshake_timeout",
        "--idle-timeout",
    )
