"""A server's stop, drain and abort: cancel scopes with deadlines, never a polled flag.

Each live connection reads inside its own `reading` scope and finishes an echo inside a
shielded `echoing` scope (`Connection`). `stop` cancels every `reading` scope, so that no
new byte is read, and gives the echoes in flight the shutdown deadline, so that the bytes
already read still go back; the connections' scope (`connections`) gets that deadline plus
the linger as a hard upper bound, and the accept loops' scope (`accepting`) is cancelled.
With a drain time, `stop` first drains: for that long everyone is still served and only
health checks fail (`draining`); `run_drain` then stops for real. `abort` ends everything
at once, mid-echo too. A connection's polite close (a linger, a TLS close_notify) runs
shielded in a `closing` scope, bounded by its own time and by the same hard upper bound.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final, final

import trio

from trio_echo.events import Emit, Stopping

# After `exit` or at shutdown a connection half-closes and then waits this long for the
# client to close, discarding what it still sends. Closing at once with unread bytes in the
# kernel's buffer would send a RST, and a RST can destroy the echo still in flight.
LINGER_SECONDS: Final = 1.0


@final
class Connection:
    """What shutdown needs to reach inside one live connection, and its byte counts."""

    __slots__ = ("bytes_in", "bytes_out", "echoing", "id", "reading")

    def __init__(self, conn_id: int) -> None:
        self.id = conn_id
        self.reading = trio.CancelScope()
        self.echoing: trio.CancelScope | None = None
        self.bytes_in = 0
        self.bytes_out = 0


@final
class Lifecycle:
    """One server's shutdown state, and the connections it must reach."""

    def __init__(self, *, shutdown_timeout: float, drain_timeout: float, emit: Emit) -> None:
        self.shutdown_timeout = shutdown_timeout
        self.drain_timeout = drain_timeout
        self._emit = emit
        self.active: dict[int, Connection] = {}
        self.greeting: set[trio.CancelScope] = set()  # connections reading a PROXY header
        self.accepting = trio.CancelScope()
        self.connections = trio.CancelScope()
        self.echo_deadline = math.inf  # when echoes in flight are cut off
        self.stop_reason: str | None = None
        self.drain_reason: str | None = None
        self._drained = trio.CancelScope()  # its deadline: the end of a drain
        self._closing: set[trio.CancelScope] = set()  # connections closing politely
        self._aborted = False

    @property
    def stopping(self) -> bool:
        return self.stop_reason is not None

    @property
    def draining(self) -> bool:
        return self.drain_reason is not None

    def stop(self, reason: str) -> None:
        """Stop accepting, finish echoing what was read, then end (first drain, with a drain
        time). Safe to call again."""
        if self.stopping or self.draining:
            return
        if self.drain_timeout > 0:
            self.drain_reason = reason
            self._emit(
                Stopping(reason, len(self.active), self.shutdown_timeout, self.drain_timeout)
            )
            self._drained.deadline = trio.current_time() + self.drain_timeout
            return
        self._stop_now(reason)

    async def run_drain(self) -> None:
        """A task beside the accept loops: wait out the drain that `stop` started (its
        deadline), then stop for real. Cancelled with the accept loops."""
        with self._drained:
            await trio.sleep_forever()
        if not self.stopping and self.drain_reason is not None:  # not aborted
            self._stop_now(self.drain_reason)

    def _stop_now(self, reason: str) -> None:
        self.stop_reason = reason
        if not self.draining:
            self._emit(Stopping(reason, len(self.active), self.shutdown_timeout))
        self.echo_deadline = trio.current_time() + self.shutdown_timeout
        self.connections.deadline = self.echo_deadline + LINGER_SECONDS
        self.accepting.cancel()
        for conn in self.active.values():
            self.stop_connection(conn)
        for greeting in self.greeting:  # connections still sending their PROXY header
            greeting.cancel()
        for closing in self._closing:
            closing.deadline = min(closing.deadline, self.connections.deadline)

    def abort(self) -> None:
        """Stop at once: cancel every connection, even mid-echo."""
        self._drained.cancel()
        if not self.stopping:
            self._stop_now("abort")
        self.echo_deadline = -math.inf
        self._aborted = True
        self.connections.cancel()
        for conn in self.active.values():
            self.stop_connection(conn)
        for closing in self._closing:
            closing.cancel()

    @contextmanager
    def closing(self, seconds: float) -> Iterator[trio.CancelScope]:
        """A shielded scope for a connection's close: its bytes in flight still reach the
        peer while the connection's task is cancelled, for at most `seconds`, and never past
        a stop's hard bound; `abort` cancels it."""
        deadline = min(trio.current_time() + seconds, self.connections.deadline)
        with trio.CancelScope(shield=True, deadline=deadline) as scope:
            if self._aborted:
                scope.cancel()
            self._closing.add(scope)
            try:
                yield scope
            finally:
                self._closing.discard(scope)

    def stop_connection(self, conn: Connection) -> None:
        """Stop `conn` reading, and bound its echo in flight by the shutdown deadline (also
        for a connection that arrives once the stop has begun)."""
        conn.reading.cancel()
        if conn.echoing is not None:
            conn.echoing.deadline = self.echo_deadline
