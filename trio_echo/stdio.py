"""Standard input and output as trio streams that never block the loop and never change the
file's mode.

trio's `FdStream` would put the descriptor into non-blocking mode, but that flag belongs to
the open file, which a terminal shares with stderr and the shell (trio issue #174): the shell
or our own stderr writes would then meet EAGAIN. So nothing here sets a flag:

- a terminal is read and written by worker threads with plain blocking calls, as it always
  was: it is slow only by human standards;
- anything else, where the kernel has it (`capabilities.nowait_io`: Linux), is first tried
  with ``RWF_NOWAIT`` (`os.preadv` / `os.pwritev` with offset
  -1, the file's own position), which asks the kernel for "only if it will not block" on this
  one call. Pipes and sockets that are not ready are then awaited with epoll, like any trio
  socket. A regular file read whose pages are not in memory (epoll cannot watch files) is
  done by a worker thread for that call; a regular file is written by a thread of its own
  from a queue (`QueuedFileWriter`: ext4 has no RWF_NOWAIT for buffered writes), so that
  closing the output stream is what waits for the last byte. Without RWF_NOWAIT (macOS,
  Windows) pipes are read and written by worker threads too, and files through the queue.

Measured with `scripts/bench/run.py` (its client rounds): see `scripts/bench/benchmarks.md`.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import threading
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Final, final

import trio

from trio_echo import capabilities
from trio_echo.eventlog import terminal_writer, write_all

READ_SIZE: Final = 1 << 20  # large reads: 3x the throughput of 64 KiB ones on a pipe
# The most written to a regular file per call. Measured on a 500 MiB file: whole batches
# of megabytes, 1.03 s for the client against 0.96 s in 64 KiB calls (medians of 8
# alternating runs), and in a noisy hour 9 of 10 runs with megabyte writes spent 0.7 to
# 1.4 s in the kernel, most of it copying into new page-cache pages (the kernel sizes
# them by the write), against none of 10 with 64 KiB writes. nc writes 16 KiB.
FILE_WRITE: Final = 64 << 10
# What RWF_NOWAIT answers when it cannot be used for this file at all.
_UNSUPPORTED: Final = frozenset({errno.EOPNOTSUPP, errno.EINVAL, errno.ESPIPE, errno.ENOSYS})


def _pollable(fd: int) -> bool:
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False  # closed: the first read or write says so
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def _terminal_reader(fd: int) -> Callable[[int], bytes]:
    """`os.read` of `fd`, or, when it is the terminal of standard input, the read of Python's
    own raw stream: on Windows that reads the console with its Unicode API (PEP 528) and
    hands back UTF-8, whatever the console's code page; elsewhere it is the same `read(2)`."""
    raw = getattr(getattr(sys.stdin, "buffer", None), "raw", None)
    try:
        ours = raw is not None and sys.stdin.fileno() == fd and os.isatty(fd)
    except (AttributeError, OSError, ValueError):
        ours = False
    if ours:
        return lambda size: bytes(raw.read(size) or b"")  # type: ignore[union-attr]
    return partial(os.read, fd)


@final
class ThreadedFdReader(trio.abc.ReceiveStream):
    """A file descriptor read by a worker thread, leaving its blocking mode alone."""

    def __init__(self, fd: int) -> None:
        self._read = _terminal_reader(fd)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        # Abandoned on cancel: the thread stays blocked in read() until input or exit,
        # which is harmless, while the client gets on with ending the session.
        return await trio.to_thread.run_sync(
            self._read, max_bytes or READ_SIZE, abandon_on_cancel=True
        )

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()  # the descriptor is not ours to close


@final
class ThreadedFdWriter(trio.abc.SendStream):
    """A file descriptor written by a worker thread, leaving its blocking mode alone.

    For a terminal, which can block a write for ever (paused, Ctrl-S): the thread is
    abandoned on cancel, with its own copy of the data."""

    def __init__(self, fd: int) -> None:
        self._write = terminal_writer(fd)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.to_thread.run_sync(self._write, bytes(data), abandon_on_cancel=True)

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


@final
class QueuedFileWriter(trio.abc.SendStream):
    """A regular file written by one thread of its own, fed from a queue.

    epoll cannot watch a file and ext4 has no RWF_NOWAIT for buffered writes, so the write
    itself must leave the loop, and a hand-over per write (`trio.to_thread`, as for a
    terminal) is too slow for a file. Here `send_all` only queues a copy and returns; the
    thread writes in order; the loop waits only while more than `limit` bytes are queued, and
    `aclose` waits for the rest. A write error is raised by the next call. The thread lives
    from the first write to `aclose`. The copies go into buffers the thread hands back once
    written, up to `limit` bytes of them kept, so that the allocator does not return and take
    the memory again (figures: scripts/bench/benchmarks.md).
    """

    def __init__(self, fd: int, limit: int = 8 * READ_SIZE) -> None:
        self._fd = fd
        self._limit = limit
        self._queue: deque[memoryview] = deque()  # each the start of a buffer of ours
        self._queued = 0  # bytes in the queue or being written
        self._spares: list[bytearray] = []  # written, to be filled again; smallest first
        self._changed = threading.Condition()
        self._closing = False
        self._error: OSError | None = None
        self._error_reported = False
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._progress = trio.Event()  # set (from the thread) when a write finished

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        self._raise_error()
        if self._thread is None:
            self._token = trio.lowlevel.current_trio_token()
            self._thread = threading.Thread(target=self._write_queue, daemon=True)
            self._thread.start()
        with self._changed:
            fits = next((i for i, b in enumerate(self._spares) if len(b) >= len(data)), None)
            buffer = None if fits is None else self._spares.pop(fits)
        chunk = memoryview(buffer if buffer is not None else bytearray(len(data)))[: len(data)]
        chunk[:] = data  # the copy, outside the lock: the thread may be writing meanwhile
        with self._changed:
            self._queue.append(chunk)
            self._queued += len(data)
            self._changed.notify()
        while self._queued > self._limit:
            await self._wait_for_progress()
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        while self._queued > self._limit:
            await self._wait_for_progress()
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        """Wait until everything queued is written (a file's write ends, so even when
        cancelled), and let the thread go."""
        with trio.CancelScope(shield=True):
            while self._queued and self._error is None:
                await self._wait_for_progress()
        with self._changed:
            self._closing = True
            self._changed.notify()
        await trio.lowlevel.checkpoint()
        self._raise_error()

    async def _wait_for_progress(self) -> None:
        self._progress = trio.Event()
        if self._queued > 0 and self._error is None:
            await self._progress.wait()

    def _raise_error(self) -> None:
        """Raise a write's error once: as a write of our own would have (disk full, I/O
        error); a caller who heard it from `send_all` does not hear it again at `aclose`."""
        if self._error is not None and not self._error_reported:
            self._error_reported = True
            raise self._error

    def _write_queue(self) -> None:  # in the thread
        while True:
            with self._changed:
                while not self._queue and not self._closing:
                    self._changed.wait()
                if not self._queue:
                    return
                chunk = self._queue.popleft()
            try:
                for start in range(0, len(chunk), FILE_WRITE):
                    write_all(self._fd, chunk[start : start + FILE_WRITE])
            except OSError as exc:
                self._error = exc
            with self._changed:
                self._queued -= len(chunk)
                buffer = chunk.obj
                assert isinstance(buffer, bytearray)
                chunk.release()
                self._spares.append(buffer)
                self._spares.sort(key=len)  # the smallest that fits is taken next
                # Up to `limit` bytes kept, the large ones (they fit any write); keeping more
                # measured slower (scripts/bench/benchmarks.md).
                while sum(map(len, self._spares)) > self._limit:
                    del self._spares[0]
            assert self._token is not None
            try:
                self._token.run_sync_soon(self._wake)
            except trio.RunFinishedError:
                return

    def _wake(self) -> None:  # in the loop
        self._progress.set()


@final
class NowaitFdReader(trio.abc.ReceiveStream):
    """A pipe, socket or regular file read on the loop when that cannot block (see above)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._pollable = _pollable(fd)
        self._threaded = ThreadedFdReader(fd)
        self._nowait = capabilities.nowait_io()
        self._buffer = bytearray()  # read into; a part read is copied out of it

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self.receive_reused(max_bytes)
        if data is self._buffer:  # the caller keeps it: read into a new one next time
            self._buffer = bytearray()
        return data

    async def receive_reused(self, max_bytes: int | None = None) -> bytes | bytearray:
        """As `receive_some`, but a read that fills the buffer returns the buffer itself,
        which the next call reads into: for a caller done with each piece before it asks
        for the next (the client's send loop).

        A fresh megabyte per read would be zeroed and faulted in page by page. A part read
        (a pipe gives 64 KiB at most) is copied out, so that the buffer need not be a
        megabyte per pipe read either.
        """
        size = max_bytes or READ_SIZE
        if len(self._buffer) != size:
            self._buffer = bytearray(size)
        while self._nowait:
            await trio.lowlevel.checkpoint_if_cancelled()
            try:
                got = os.preadv(self._fd, [self._buffer], -1, os.RWF_NOWAIT)
            except BlockingIOError:
                if not self._pollable:
                    break  # a file's pages not in memory: the thread reads them
                await trio.lowlevel.wait_readable(self._fd)
                continue
            except OSError as exc:
                if exc.errno not in _UNSUPPORTED:
                    raise
                self._nowait = False
                break
            await trio.lowlevel.cancel_shielded_checkpoint()
            return self._buffer if got == size else self._buffer[:got]
        return await self._threaded.receive_some(size)

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


@final
class NowaitFdWriter(trio.abc.SendStream):
    """A pipe, socket or regular file written on the loop when that cannot block."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._pollable = _pollable(fd)
        self._fallback: trio.abc.SendStream = (
            ThreadedFdWriter(fd) if self._pollable else QueuedFileWriter(fd)
        )
        self._nowait = capabilities.nowait_io()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        rest = memoryview(data).cast("B")
        while rest and self._nowait:
            try:
                rest = rest[os.pwritev(self._fd, [rest], -1, os.RWF_NOWAIT) :]
            except BlockingIOError:
                if not self._pollable:
                    break
                await trio.lowlevel.wait_writable(self._fd)
                continue
            except OSError as exc:
                if exc.errno not in _UNSUPPORTED:
                    raise
                self._nowait = False
        if rest:
            await self._fallback.send_all(rest)
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await self._fallback.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._fallback.aclose()  # the descriptor itself is not ours to close


def open_input(fd: int) -> trio.abc.ReceiveStream:
    """The stream to read `fd` with: threads for a terminal, RWF_NOWAIT for anything else."""
    return ThreadedFdReader(fd) if os.isatty(fd) else NowaitFdReader(fd)


def open_output(fd: int) -> trio.abc.SendStream:
    """The stream to write `fd` with: threads for a terminal, RWF_NOWAIT for anything else."""
    return ThreadedFdWriter(fd) if os.isatty(fd) else NowaitFdWriter(fd)
