"""The event log: each event rendered at once, written later, in batches, by a worker thread.

Writing to a terminal, a pipe or a file is a system call that can block: a slow terminal, a
full pipe, a paused pager. An echo server must never wait for its log, so `EventLog.emit`
only renders the line and appends it to a buffer; the log's own task hands what gathers in
5 ms to a worker thread, which writes it at once (under load, one write, many lines).

The buffer is bounded. When the writer has fallen `limit` lines behind, data events
(received, sent) are left out; at four times that, every event is. Each one left out is
counted and the count is logged (`log_dropped`) as soon as the writer catches up: memory
stays bounded, and the log says what it lost. At the end, what is buffered is written,
waiting at most `FINAL_FLUSH_SECONDS` for a stuck terminal.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final, final

import trio

from trio_echo.events import RENDERERS, Event, LogDropped, LogFormat

DEFAULT_LIMIT: Final = 10_000  # lines, about 1 MiB of text
FINAL_FLUSH_SECONDS: Final = 5.0
GATHER_SECONDS: Final = 0.005


def write_all(fd: int, data: bytes) -> None:
    """A blocking write of every byte (os.write may take only a part)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


@final
class EventLog:
    """Event lines for one file descriptor, buffered; `emit` is its `Emit`."""

    def __init__(
        self,
        log_format: LogFormat,
        fd: int,
        limit: int = DEFAULT_LIMIT,
        worker: int | None = None,
    ) -> None:
        self._render = RENDERERS[log_format]
        self._worker = worker
        self._fd = fd
        self._limit = limit
        # Appended to here, taken from by a worker thread: deque's append and popleft are
        # atomic, and a line not yet taken simply waits for the next batch.
        self._lines: deque[str] = deque()
        self._write_lock = threading.Lock()  # one batch at a time, in order
        self._broken = False
        self.dropped = 0  # left out since the last report
        self._wake = trio.Event()

    @property
    def backlog(self) -> int:
        """Lines rendered but not yet taken by the writer."""
        return len(self._lines)

    def emit(self, event: Event) -> None:
        backlog = len(self._lines)
        if backlog >= self._limit and (event.data or backlog >= 4 * self._limit):
            self.dropped += 1
        else:
            self._lines.append(self._render(event, time.time(), self._worker) + "\n")
        self._wake.set()

    async def write_until_cancelled(self) -> None:
        """The log's task: write each batch as it gathers."""
        while True:
            await self._wake.wait()
            # Let a batch gather: a hand-over to a thread costs about as much as rendering
            # a hundred lines, and a log line a few milliseconds late harms nobody.
            await trio.sleep(GATHER_SECONDS)
            self._wake = trio.Event()
            await self.flush()

    async def flush(self) -> None:
        """Write every line buffered so far (and the count of lines left out)."""
        if self.dropped:
            report = LogDropped(events=self.dropped)
            self._lines.append(self._render(report, time.time(), self._worker) + "\n")
            self.dropped = 0
        # Abandoned on cancel: a write stuck on a terminal must not hold up a shutdown.
        await trio.to_thread.run_sync(self._write_batch, abandon_on_cancel=True)

    def _write_batch(self) -> None:  # in a worker thread
        with self._write_lock:
            lines = self._lines
            batch = [lines.popleft() for _ in range(len(lines))]
            if not batch or self._broken:
                return
            try:
                write_all(self._fd, "".join(batch).encode("utf-8", "backslashreplace"))
            except OSError:  # nobody reads the log any more (EPIPE, EBADF): drop from now on
                self._broken = True


@asynccontextmanager
async def open_event_log(
    log_format: LogFormat, fd: int = 2, limit: int = DEFAULT_LIMIT, worker: int | None = None
) -> AsyncIterator[EventLog]:
    """An `EventLog` with its writing task, for the duration of the block; at its end the
    last lines are written, even when the block was cancelled, within FINAL_FLUSH_SECONDS.
    `worker` (of `--workers`) is named in every line."""
    log = EventLog(log_format, fd, limit, worker)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(log.write_until_cancelled)
            try:
                yield log
            finally:
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True, deadline=trio.current_time() + FINAL_FLUSH_SECONDS):
            await log.flush()
