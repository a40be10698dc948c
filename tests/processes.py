"""Running the entry points as real processes, synchronised on their own event log."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio

SERVER = [sys.executable, "-m", "trio_echo.server"]
CLIENT = [sys.executable, "-m", "trio_echo.client"]
CHECK = [sys.executable, "-m", "trio_echo.check"]
# How long a test waits for a process to say something before calling it a failure.
PATIENCE = 15
LISTENING_TEXT = re.compile(r"listening on \[?([0-9a-f.:]+)\]?:(\d+)")


class LineReader:
    """Lines from a process's pipe. `pump` (a background task) reads them all as they come,
    so the process never blocks on a full pipe; `until` waits for one, `rest` for the end."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._cursor = 0
        self._changed = trio.Event()
        self.ended = False
        self.seen: list[str] = []

    async def pump(self) -> None:
        buffer = b""
        try:
            while data := await self._stream.receive_some(65536):
                buffer += data
                *lines, buffer = buffer.split(b"\n")
                self.seen.extend(line.decode(errors="replace") for line in lines)
                self._wake()
        finally:
            self.ended = True
            self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def until(self, needle: str) -> str:
        """The first line, after those already matched, that contains `needle`."""
        with trio.fail_after(PATIENCE):
            while True:
                for index in range(self._cursor, len(self.seen)):
                    if needle in self.seen[index]:
                        self._cursor = index + 1
                        return self.seen[index]
                if self.ended:
                    raise AssertionError(f"{needle!r} never came; saw {self.seen[-20:]}")
                await self._changed.wait()

    async def rest(self) -> list[str]:
        """Every line, once the pipe has ended."""
        with trio.fail_after(PATIENCE):
            while not self.ended:
                await self._changed.wait()
        return self.seen


@asynccontextmanager
async def reading(stream: trio.abc.ReceiveStream) -> AsyncIterator[LineReader]:
    reader = LineReader(stream)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader.pump)
        yield reader
        nursery.cancel_scope.cancel()


class ServerProcess:
    def __init__(self, process: trio.Process, log: LineReader, port: int, listening: str) -> None:
        self.process = process
        self.log = log
        self.port = port
        self.listening = listening  # its `listening` event's line

    @property
    def fingerprint(self) -> str:
        """The TLS certificate's fingerprint that its `listening` event shows."""
        found = re.search(r"sha256:[0-9a-f]{64}", self.listening)
        assert found is not None, self.listening
        return found.group(0)


@asynccontextmanager
async def server_process(
    *args: str,
    json_log: bool = True,
    preexec_fn: Callable[[], None] | None = None,
    env: dict[str, str] | None = None,
) -> AsyncIterator[ServerProcess]:
    """A server process on a free port, yielded once its `listening` event is out."""
    options = ["--port", "0", *(["--log-format", "json"] if json_log else []), *args]
    process = await trio.lowlevel.open_process(
        [*SERVER, *options], stderr=subprocess.PIPE, preexec_fn=preexec_fn, env=env
    )
    try:
        assert process.stderr is not None
        async with reading(process.stderr) as log:
            line = await log.until("listening")
            if json_log:
                port = int(json.loads(line)["port"])
            else:
                found = LISTENING_TEXT.search(line)
                assert found is not None, line
                port = int(found.group(2))
            yield ServerProcess(process, log, port, line)
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()


async def run_client(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(4 * PATIENCE):
        return await trio.run_process(
            [*CLIENT, *args], stdin=stdin, capture_stdout=True, capture_stderr=True, check=False
        )


def free_port() -> int:
    """A loopback port that was free a moment ago, for programs that cannot take port 0."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@asynccontextmanager
async def external_server(argv: list[str], ready: str) -> AsyncIterator[trio.Process]:
    """A program we did not write, started by us in a session of its own and yielded once
    its stderr says `ready`; afterwards its whole process group is killed, because some (ncat
    -k -e) fork a child per connection that can outlive the parent."""
    process = await trio.lowlevel.open_process(argv, stderr=subprocess.PIPE, start_new_session=True)
    try:
        assert process.stderr is not None
        async with reading(process.stderr) as said:
            await said.until(ready)
            yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the group we created: pgid == its pid
        with trio.CancelScope(shield=True):
            await process.wait()
