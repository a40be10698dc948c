"""Running the entry points as real processes, synchronised on their own event log."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio

SERVER = [sys.executable, "-m", "trio_echo.server"]
CLIENT = [sys.executable, "-m", "trio_echo.client"]
# How long a test waits for a process to say something before calling it a failure.
PATIENCE = 15
LISTENING_TEXT = re.compile(r"listening on \[?([0-9a-f.:]+)\]?:(\d+)")


class LineReader:
    """Lines from a process's pipe, as they come; every line read is kept in `seen`."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self.seen: list[str] = []

    async def line(self) -> str | None:
        while b"\n" not in self._buffer:
            data = await self._stream.receive_some(65536)
            if not data:
                return None
            self._buffer += data
        raw, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer = bytearray(rest)
        text = raw.decode()
        self.seen.append(text)
        return text

    async def until(self, needle: str) -> str:
        """The first line (from now on) that contains `needle`."""
        with trio.fail_after(PATIENCE):
            while (line := await self.line()) is not None:
                if needle in line:
                    return line
        raise AssertionError(f"{needle!r} never came; saw {self.seen}")

    async def rest(self) -> list[str]:
        with trio.fail_after(PATIENCE):
            while await self.line() is not None:
                pass
        return self.seen


class ServerProcess:
    def __init__(self, process: trio.Process, log: LineReader, port: int) -> None:
        self.process = process
        self.log = log
        self.port = port


@asynccontextmanager
async def server_process(
    *args: str, json_log: bool = True, preexec_fn: Callable[[], None] | None = None
) -> AsyncIterator[ServerProcess]:
    """A server process on a free port, yielded once its `listening` event is out."""
    options = ["--port", "0", *(["--log-format", "json"] if json_log else []), *args]
    process = await trio.lowlevel.open_process(
        [*SERVER, *options], stderr=subprocess.PIPE, preexec_fn=preexec_fn
    )
    try:
        assert process.stderr is not None
        log = LineReader(process.stderr)
        line = await log.until("listening")
        if json_log:
            port = int(json.loads(line)["port"])
        else:
            found = LISTENING_TEXT.search(line)
            assert found is not None, line
            port = int(found.group(2))
        yield ServerProcess(process, log, port)
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
    """A program we did not write, started by us and yielded once its stderr says `ready`;
    killed by its PID afterwards."""
    process = await trio.lowlevel.open_process(argv, stderr=subprocess.PIPE)
    try:
        assert process.stderr is not None
        await LineReader(process.stderr).until(ready)
        yield process
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()
