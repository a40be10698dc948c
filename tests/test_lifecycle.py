"""Stop, drain and abort as cancel scopes with deadlines (`Lifecycle`), on trio's mock clock."""

from __future__ import annotations

import math

import trio
import trio.testing

from tests.conftest import Recorder
from trio_echo.events import Stopping
from trio_echo.server.lifecycle import LINGER_SECONDS, Connection, Lifecycle


async def test_stop_cuts_reading_and_bounds_the_echo(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder = Recorder()
    life = Lifecycle(shutdown_timeout=5.0, drain_timeout=0.0, emit=recorder)
    conn = Connection(1)
    life.active[conn.id] = conn
    conn.echoing = trio.CancelScope()
    life.stop("SIGTERM")
    life.stop("again")  # said once
    now = trio.current_time()
    assert conn.reading.cancel_called
    assert conn.echoing.deadline == now + 5.0
    assert life.connections.deadline == now + 5.0 + LINGER_SECONDS
    assert life.accepting.cancel_called
    assert [e.reason for e in recorder.of(Stopping)] == ["SIGTERM"]
    late = Connection(2)  # arrives once the stop has begun
    life.stop_connection(late)
    assert late.reading.cancel_called


async def test_a_drain_serves_everyone_then_stops(autojump_clock: trio.testing.MockClock) -> None:
    recorder = Recorder()
    life = Lifecycle(shutdown_timeout=1.0, drain_timeout=3.0, emit=recorder)
    conn = Connection(1)
    life.active[conn.id] = conn
    async with trio.open_nursery() as nursery:
        nursery.start_soon(life.run_drain)
        await trio.testing.wait_all_tasks_blocked()
        began = trio.current_time()
        life.stop("SIGTERM")
        assert life.draining
        assert not life.stopping
        assert not conn.reading.cancel_called
        with life.accepting:  # what the accept loops run in: cancelled when the drain ends
            await trio.sleep_forever()
        assert trio.current_time() - began == 3.0
    assert life.stop_reason == "SIGTERM"
    assert conn.reading.cancel_called
    [stopping] = recorder.of(Stopping)
    assert stopping.drain == 3.0


async def test_abort_cuts_even_the_echo(autojump_clock: trio.testing.MockClock) -> None:
    life = Lifecycle(shutdown_timeout=5.0, drain_timeout=2.0, emit=Recorder())
    conn = Connection(1)
    conn.echoing = trio.CancelScope()
    life.active[conn.id] = conn
    life.stop("SIGINT")  # draining
    life.abort()
    assert life.stop_reason == "abort"  # the drain is cut short: it never stops "on SIGINT"
    assert conn.echoing.deadline == -math.inf
    assert life.connections.cancel_called
