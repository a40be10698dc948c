"""The last layer: echo a connection's bytes until `exit`, the end of input, the idle
timeout or a stop. It sees a `Transport` and the exit detector, never what ran before it.
"""

from __future__ import annotations

import math
from typing import Final

import trio

from trio_echo.events import DisconnectReason, Emit, Received, Sent, preview
from trio_echo.protocol import ExitDetector
from trio_echo.server.lifecycle import Connection, Lifecycle
from trio_echo.server.transports import Transport

# A read at least this large that fills the buffer is followed at once by the next read, up
# to STREAK reads before the loop's checkpoint (see `echo_until_done`).
LARGE_READ: Final = 16 * 1024
STREAK: Final = 8


async def echo_until_done(
    io: Transport,
    conn: Connection,
    life: Lifecycle,
    *,
    chunk_size: int,
    exit_command: bool,
    report: Emit | None,
    idle_timeout: float | None = None,
    max_bytes: int | None = None,
) -> DisconnectReason:
    """Echo every byte read until the session ends, and say why it ended. `report` gets the
    per-read events (None: none). Cancelling `conn.reading` ends it between two echoes
    ("shutdown", from outside); an echo under way is finished by `life`'s deadline. With
    `idle_timeout`, an echo that the client does not take (not a byte of it for that long:
    it stopped reading) ends the session too ("stalled"): its reads wait on the transport's
    own idle timeout ("timeout"). With `max_bytes`, the read that reaches it is echoed, then
    the session ends ("max_bytes").

    One checkpoint per message: that is where a stop takes effect, never in the middle of an
    echo; it is fair to the other connections; and while they run, the client's next message
    arrives, so the next read finds it instead of waiting in epoll (twice the messages per
    second at 10 connections). A large read that filled the buffer is most likely the middle
    of a message whose rest is already here, so the loop reads on, up to STREAK reads.
    """
    detector = ExitDetector() if exit_command else None
    streak = 0  # large reads in a row that filled the buffer
    full = chunk_size if chunk_size >= LARGE_READ else -1  # -1: never read on
    while True:
        if (streak == 0 or streak >= STREAK) and io.reads_without_checkpoint:
            streak = 0
            await trio.lowlevel.checkpoint()
        data = io.read_now()
        streak = streak + 1 if data is not None and len(data) == full else 0
        if data is None:
            data = await io.receive()
        if data is None:
            return "timeout"
        if not data:
            return "exit" if detector is not None and detector.end_of_input() else "eof"
        conn.bytes_in += len(data)
        if report is not None:
            report(Received(conn=conn.id, bytes=len(data), preview=preview(data)))
        cut = None if detector is None else detector.feed(data)
        if cut is not None:
            data = data[:cut]
        try:
            sent = io.send_now(data) or await finish_send(io, conn, life, idle_timeout)
        except Stalled:
            return "stalled"
        if sent and report is not None:
            report(Sent(conn=conn.id, bytes=len(data)))
        if cut is not None:
            return "exit"
        if max_bytes is not None and conn.bytes_in >= max_bytes:
            return "max_bytes"  # what it read is echoed: the limit ends it after that


class Stalled(Exception):
    """The client took none of its echo for the idle timeout."""


async def finish_send(
    io: Transport, conn: Connection, life: Lifecycle, idle_timeout: float | None
) -> bool:
    """Finish an echo the connection could not take at once; False if the stop cut it off.
    Shielded from the `reading` cancellation, so that bytes already read still go back at a
    stop; bounded by the shutdown deadline instead. Raises `Stalled` if not a byte of it is
    taken for `idle_timeout` seconds. (The WebSocket echo finishes its frames with it too.)"""
    with trio.CancelScope(shield=True, deadline=life.echo_deadline) as conn.echoing:
        while io.unsent:
            before = io.unsent
            with trio.move_on_after(math.inf if idle_timeout is None else idle_timeout):
                await io.send_rest()
            if io.unsent and io.unsent >= before:
                conn.echoing = None
                raise Stalled
    conn.echoing = None
    return not io.unsent
