"""Through a fault-injecting proxy: split, delayed, stalled and reset connections."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from tests.conftest import Recorder, said
from tests.streams import Collector
from trio_echo.client import run_session
from trio_echo.events import Disconnected, SessionEnded
from trio_echo.faulty_link import FaultProxy, Faults
from trio_echo.server import EchoServer, ServerConfig


async def session_through(
    faults: Faults, payload: bytes, seed: int
) -> tuple[str, bytes, Recorder, Recorder, FaultProxy]:
    server_log, client_log = Recorder(), Recorder()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(EchoServer(ServerConfig(port=0), emit=server_log).run)
        host, server_port = server.addresses[0]
        proxy = FaultProxy(host, server_port, faults, seed=seed)
        port = await nursery.start(proxy.run)
        stdin_send, stdin = trio.testing.memory_stream_one_way_pair()
        await stdin_send.send_all(payload)
        await stdin_send.aclose()
        stdout = Collector()
        with trio.fail_after(60):
            sock = await trio.open_tcp_stream("127.0.0.1", port)
            async with sock:
                reason = await run_session(sock, stdin, stdout, emit=client_log, close_timeout=5)
            await server_log.wait_for(Disconnected)
        server.stop()
        nursery.cancel_scope.cancel()
    return reason, bytes(stdout.data), server_log, client_log, proxy


@pytest.mark.parametrize("seed", range(3))
async def test_split_delayed_and_stalled_segments_change_nothing(seed: int) -> None:
    payload = random.Random(seed).randbytes(80_000) + b"\nlast line\n"
    faults = Faults(split=97, delay=0.0005, stall=0.002, stall_seconds=0.05)
    reason, echoed, server_log, _, proxy = await session_through(faults, payload, seed)
    assert (reason, echoed == payload) == ("eof", True)
    [end] = server_log.of(Disconnected)
    assert (end.reason, end.bytes_in, end.bytes_out) == ("eof", len(payload), len(payload))
    assert proxy.counts.pieces > 2 * len(payload) // 97  # it really did cut them up
    assert proxy.counts.stalls > 0


@pytest.mark.parametrize("seed", range(3))
async def test_a_reset_mid_echo_is_reported_by_both_sides(seed: int) -> None:
    payload = random.Random(seed).randbytes(100_000)
    reason, echoed, server_log, client_log, proxy = await session_through(
        Faults(split=1000, reset=0.01), payload, seed
    )
    assert proxy.counts.resets == 1
    assert reason == "reset"
    assert echoed == payload[: len(echoed)]  # what did come back is right
    [end] = server_log.of(Disconnected)
    assert end.reason == "reset"
    [client_end] = client_log.of(SessionEnded)
    assert "reset" in said(client_end.detail).lower()


async def test_exit_still_works_through_a_shredding_proxy() -> None:
    payload = b"one\ntwo\n  ex" + b"it  \r\n" + b"never echoed\n"
    reason, echoed, server_log, _, _ = await session_through(
        Faults(split=1, delay=0.001), payload, seed=1
    )
    assert (reason, echoed) == ("exit", b"one\ntwo\n  exit  \r\n")
    assert server_log.of(Disconnected)[0].reason == "exit"
