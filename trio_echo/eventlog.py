"""The event log: events kept as they happen, rendered and written in batches.

Writing to a terminal, a pipe or a file is a system call that can block: a slow terminal, a
full pipe, a paused pager. An echo server must never wait for its log, so `EventLog.emit`
only appends the event and its time to a buffer. Every 5 ms (when there is something) the
log's own task renders what gathered into one block of text and hands it to a worker
thread, which writes it (a batch costs less than an event at a time between two echoes).

The buffer is bounded. When the writer has fallen `limit` lines behind, data events
(received, sent) are left out; at four times that, every event is. Each one left out is
counted and the count is logged (`log_dropped`) as soon as the writer catches up: memory
stays bounded, and the log says what it lost. At the end, what is buffered is written,
waiting at most `FINAL_FLUSH_SECONDS` for a stuck terminal.

With `TRIO_ECHO_EVENT_COPY=FILE` in the environment, every event logged is also appended to
FILE as a JSON line, whatever `--log-format` says: an audit trail in the one format programs
read (the test suite checks every event its processes log against the schema this way).
"""

from __future__ import annotations

import io
import os
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Final, final

import trio

from trio_echo.events import Event, LogDropped
from trio_echo.rendering import RENDERERS, LogFormat, render_json

COPY_VARIABLE: Final = "TRIO_ECHO_EVENT_COPY"

DEFAULT_LIMIT: Final = 10_000  # lines, about 1 MiB of text
FINAL_FLUSH_SECONDS: Final = 5.0
GATHER_SECONDS: Final = 0.005


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """A blocking write of every byte (os.write may take only a part)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


Writer = Callable[[bytes | bytearray | memoryview], None]


def terminal_writer(fd: int) -> Writer:
    """A blocking write of every byte to `fd`, through Python's own raw stream when `fd` is
    the terminal of standard output or error: on Windows that stream writes to the console
    with its Unicode API (PEP 528), so UTF-8 (Cyrillic) shows right whatever the console's
    code page; elsewhere it is the same `write(2)`."""
    for stream in (sys.stdout, sys.stderr):
        raw = getattr(getattr(stream, "buffer", None), "raw", None)
        if raw is not None and _fileno(stream) == fd and os.isatty(fd):
            return partial(_write_raw, raw)
    return partial(write_all, fd)


def _fileno(stream: object) -> int | None:
    try:
        return int(stream.fileno())  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return None


def _write_raw(raw: io.RawIOBase, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[raw.write(view) or 0 :]


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
        self._write = terminal_writer(fd)
        self._limit = limit
        self._lines: list[tuple[Event, float]] = []  # not yet rendered
        self._in_flight = 0  # lines handed to the writer and not yet written
        # Batches are joined and encoded here, in the event loop's thread, so that the
        # worker thread hardly needs the GIL: it only writes. A batch whose thread never
        # started (cancelled first) stays in the deque for the next one.
        self._batches: deque[bytes] = deque()
        self._write_lock = threading.Lock()  # one thread writing at a time, batches in order
        self._broken = False
        self._copy = _open_copy(os.environ.get(COPY_VARIABLE))  # a file for JSON copies
        self._copies: deque[bytes] = deque()
        self.dropped = 0  # left out since the last report
        self.dropped_total = 0  # left out since the start (the operator's metrics)
        self._wake = trio.Event()

    @property
    def backlog(self) -> int:
        """Events emitted and not yet written."""
        return len(self._lines) + self._in_flight

    def emit(self, event: Event) -> None:
        backlog = len(self._lines) + self._in_flight
        if backlog >= self._limit and (event.data or backlog >= 4 * self._limit):
            self.dropped += 1
            self.dropped_total += 1
        else:
            self._lines.append((event, time.time()))
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
            self._lines.append((report, time.time()))
            self.dropped = 0
        lines, self._lines = self._lines, []
        if lines:
            render, worker = self._render, self._worker
            text = "".join([render(event, when, worker) + "\n" for event, when in lines])
            self._batches.append(text.encode("utf-8", "backslashreplace"))
            if self._copy is not None:
                copy = "".join([render_json(event, when, worker) + "\n" for event, when in lines])
                self._copies.append(copy.encode("utf-8", "backslashreplace"))
        self._in_flight = len(lines)
        # Abandoned on cancel: a write stuck on a terminal must not hold up a shutdown.
        await trio.to_thread.run_sync(self._write_batches, abandon_on_cancel=True)
        self._in_flight = 0

    def close_copy(self) -> None:
        if self._copy is not None:
            os.close(self._copy)
            self._copy = None

    def _write_batches(self) -> None:  # in a worker thread
        with self._write_lock:
            while self._copies and self._copy is not None:
                # O_APPEND and one write a batch: processes sharing the file never interleave.
                try:
                    write_all(self._copy, self._copies.popleft())
                except OSError:  # a copy is no reason to stop: it ends here
                    self.close_copy()
                    self._copies.clear()
            while self._batches:
                batch = self._batches.popleft()
                if self._broken:
                    continue
                try:
                    self._write(batch)
                except OSError:  # nobody reads the log any more (EPIPE, EBADF): drop all
                    self._broken = True


def _open_copy(path: str | None) -> int | None:
    """The copy's descriptor, opened once at the start: a server out of descriptors
    (EMFILE) must not lose its audit trail just when it matters."""
    if not path:
        return None
    try:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:  # a copy is no reason not to start
        return None


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
        if not log.backlog:  # else a thread may still write it: the exit closes it
            log.close_copy()
