"""The event log: nothing lost while it keeps up, bounded and honest when it cannot."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import pytest
import trio

from trio_echo import eventlog
from trio_echo.eventlog import open_event_log
from trio_echo.events import Connected, Sent, Stopped


@contextmanager
def pipe() -> Iterator[tuple[int, int]]:
    read_end, write_end = os.pipe()
    try:
        yield read_end, write_end
    finally:
        for fd in (read_end, write_end):
            with suppress(OSError):  # closed by the test already
                os.close(fd)


def read_until_eof(fd: int) -> list[str]:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks).decode().splitlines()


async def test_every_line_arrives_in_order_across_many_batches() -> None:
    with pipe() as (read_end, write_end):
        lines: list[str] = []

        async def read_all() -> None:  # concurrently, in a thread, as a terminal would
            lines.extend(await trio.to_thread.run_sync(read_until_eof, read_end))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all)
            async with open_event_log("text", write_end) as log:
                for count in range(5000):
                    log.emit(Sent(conn=1, bytes=count))
                    if count % 7 == 0:
                        await trio.lowlevel.checkpoint()  # let batches of any size form
            os.close(write_end)
    assert [line.split()[3] for line in lines] == [str(count) for count in range(5000)]


async def test_a_log_that_falls_behind_drops_data_events_first_and_says_how_many() -> None:
    limit = 10
    with pipe() as (read_end, write_end):
        async with open_event_log("json", write_end, limit=limit) as log:
            # No checkpoint in between: the writer cannot run, so the buffer only grows.
            for count in range(200):
                log.emit(Sent(conn=1, bytes=count))
                log.emit(Connected(conn=count, peer="127.0.0.1:1", active=1))
            assert log.dropped > 0
        os.close(write_end)
        lines = read_until_eof(read_end)
    kinds = [line.split('"event": "')[1].split('"')[0] for line in lines]
    sent, connected = kinds.count("server.sent"), kinds.count("server.connected")
    assert kinds[-1] == "log.dropped"
    dropped = int(lines[-1].split('"events": ')[1].split(",")[0])
    assert sent + connected + dropped == 400  # every event is either logged or counted
    assert connected > sent  # the data events went first
    assert len(lines) == 4 * limit + 1  # the bound held, and the report was added


async def test_a_stuck_reader_never_blocks_the_server_and_memory_stays_bounded() -> None:
    limit = 500
    with pipe() as (read_end, write_end):
        with trio.fail_after(60):
            async with open_event_log("text", write_end, limit=limit) as log:
                # Far more than the pipe holds (64 KiB), while nobody reads it.
                for count in range(20_000):
                    log.emit(Sent(conn=1, bytes=count))
                    log.emit(Stopped(connections=count, bytes_in=0, bytes_out=0, uptime=0.0))
                    await trio.lowlevel.checkpoint()
                    assert log.backlog <= 4 * limit
                assert log.dropped > 0
                os.close(read_end)  # the reader goes away: the stuck write fails, EPIPE
            # ... and the log neither raised nor hung: it stopped writing.


async def test_a_final_flush_into_a_stuck_pipe_gives_up_in_bounded_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(eventlog, "FINAL_FLUSH_SECONDS", 0.5)
    with pipe() as (read_end, write_end):
        os.set_blocking(write_end, True)
        with trio.fail_after(30):
            async with open_event_log("text", write_end) as log:
                for count in range(5000):  # about 300 KiB: more than the pipe holds
                    log.emit(Stopped(connections=count, bytes_in=0, bytes_out=0, uptime=0.0))
        # We got here, with the writer thread still stuck in write(); free it.
        os.close(read_end)
