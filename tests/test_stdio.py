"""Standard input and output streams: they never block the loop and never touch a file's mode."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from trio_echo import stdio
from trio_echo.eventlog import write_all


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_end, write_end = os.pipe()
    yield read_end, write_end
    for fd in (read_end, write_end):
        with contextlib.suppress(OSError):  # a test may have closed it
            os.close(fd)


async def test_a_pipe_is_read_on_the_loop_and_stays_blocking(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    reader = stdio.open_input(read_end)
    assert isinstance(reader, stdio.NowaitFdReader)
    got: list[bytes | bytearray] = []
    waiting = trio.Event()

    async def read() -> None:
        waiting.set()
        got.append(await reader.receive_some(100))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        await waiting.wait()
        await trio.testing.wait_all_tasks_blocked()
        # The reader waits in epoll: the loop runs, nothing was read yet.
        assert got == []
        os.write(write_end, b"hello\n")
    assert got == [b"hello\n"]
    os.close(write_end)
    assert await reader.receive_some() == b""  # end of input
    assert os.get_blocking(read_end)


async def test_a_full_pipe_is_awaited_not_blocked_on(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    writer = stdio.open_output(write_end)
    assert isinstance(writer, stdio.NowaitFdWriter)
    data = os.urandom(1 << 20)  # 16 times what a pipe holds
    received = bytearray()

    async def drain() -> None:
        reader = stdio.open_input(read_end)
        while len(received) < len(data):
            received.extend(await reader.receive_some(65536))

    async with trio.open_nursery() as nursery:
        await writer.send_all(data[:65536])  # fills the pipe: nobody reads it yet
        nursery.start_soon(drain)
        await writer.send_all(data[65536:])
    assert bytes(received) == data
    assert os.get_blocking(write_end)


async def test_regular_files_are_read_and_written_exactly(tmp_path: Path) -> None:
    source, target = tmp_path / "in", tmp_path / "out"
    data = os.urandom(3 * stdio.READ_SIZE + 12345)
    source.write_bytes(data)
    with source.open("rb") as infile, target.open("wb") as outfile:
        reader = stdio.open_input(infile.fileno())
        async with stdio.open_output(outfile.fileno()) as writer:  # closing it waits
            while piece := await reader.receive_some():
                await writer.send_all(memoryview(piece))
    assert target.read_bytes() == data


async def test_only_receive_reused_hands_out_its_buffer_again(tmp_path: Path) -> None:
    """`receive_some`'s pieces are the caller's for good; `receive_reused` reads the next
    full piece into the same buffer (no fresh megabyte per read)."""
    source = tmp_path / "in"
    data = os.urandom(4 * 1000 + 10)
    source.write_bytes(data)
    with source.open("rb") as infile:
        reader = stdio.NowaitFdReader(infile.fileno())
        kept = [await reader.receive_some(1000), await reader.receive_some(1000)]
        assert kept == [data[:1000], data[1000:2000]]  # the first was not overwritten
        first = await reader.receive_reused(1000)
        assert first == data[2000:3000]
        second = await reader.receive_reused(1000)
        assert second is first
        assert second == data[3000:4000]
        last = await reader.receive_reused(1000)
        assert last == data[4000:]
        assert last is not first  # a part is copied out: the buffer stays a full one


async def test_a_file_written_from_a_queue_keeps_order_and_bounds_it(tmp_path: Path) -> None:
    """More than the queue may hold, in small pieces from one reused buffer: the loop waits
    for the thread, and every byte lands in order."""
    target = tmp_path / "out"
    data = os.urandom(2 << 20)
    piece = bytearray(10_000)
    with target.open("wb") as outfile:
        async with stdio.QueuedFileWriter(outfile.fileno(), limit=50_000) as writer:
            for start in range(0, len(data), len(piece)):
                chunk = data[start : start + len(piece)]
                piece[: len(chunk)] = chunk
                await writer.send_all(memoryview(piece)[: len(chunk)])
    assert target.read_bytes() == data


async def test_a_file_queue_copies_into_buffers_it_reuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fifty writes go through a few buffers, not fifty fresh ones (page faults),
    and reach the file in calls of at most `FILE_WRITE` bytes."""
    written: list[object] = []  # the buffers themselves: kept alive, never mistaken for new
    sizes: list[int] = []

    def recording_write_all(fd: int, data: memoryview) -> None:
        written.append(data.obj if isinstance(data, memoryview) else data)
        sizes.append(len(data))
        write_all(fd, data)

    monkeypatch.setattr(stdio, "write_all", recording_write_all)
    target = tmp_path / "out"
    pieces = [os.urandom(100_000) for _ in range(50)]
    with target.open("wb") as outfile:
        async with stdio.QueuedFileWriter(outfile.fileno(), limit=300_000) as writer:
            for piece in pieces:
                await writer.send_all(piece)
    assert target.read_bytes() == b"".join(pieces)
    # At most 4 in flight and 3 kept: a buffer is new only when all are in flight, at most
    # once per 4 writes (a slow thread lets the queue fill); a fresh one per write is 50.
    assert len({id(buffer) for buffer in written}) <= 4 + 50 // 4
    assert max(sizes) == stdio.FILE_WRITE


async def test_a_write_error_is_not_lost() -> None:
    """/dev/full: every write fails with ENOSPC; the stream says so, by closing at the latest."""
    full = os.open("/dev/full", os.O_WRONLY)

    async def write_and_close() -> None:
        writer = stdio.open_output(full)
        await writer.send_all(b"more than fits\n")
        await writer.aclose()

    try:
        with pytest.raises(OSError, match="No space left") as raised:
            await write_and_close()
    finally:
        os.close(full)
    assert raised.value.errno == errno.ENOSPC


async def test_the_file_position_is_respected(tmp_path: Path) -> None:
    """`cmd < file` after another reader: reading goes on where it left off, as read() does."""
    path = tmp_path / "in"
    path.write_bytes(b"first line\nsecond line\n")
    with path.open("rb", buffering=0) as infile:
        assert infile.read(11) == b"first line\n"
        reader = stdio.open_input(infile.fileno())
        assert await reader.receive_some() == b"second line\n"
        assert infile.tell() == 23


async def test_a_terminal_keeps_the_threads() -> None:
    controller, terminal = os.openpty()
    try:
        assert isinstance(stdio.open_input(terminal), stdio.ThreadedFdReader)
        assert isinstance(stdio.open_output(terminal), stdio.ThreadedFdWriter)
        writer = stdio.open_output(terminal)
        await writer.send_all(b"shown\n")
        assert os.read(controller, 100).startswith(b"shown")
        assert os.get_blocking(terminal)
    finally:
        os.close(controller)
        os.close(terminal)
