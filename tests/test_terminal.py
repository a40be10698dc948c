"""The client typed at in a real terminal (tmux): echoes appear, `exit` ends the session,
and the terminal is left in blocking mode for the shell (trio issue #174)."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from tests.conftest import Recorder, require_tool
from tests.processes import PATIENCE
from trio_echo.events import Connected, Disconnected, Sent
from trio_echo.server import EchoServer


class Terminal:
    """A tmux server of the test's own (-L), whose pane output streams through a FIFO."""

    def __init__(self, tmp_path: Path) -> None:
        self.socket = f"trio-echo-test-{os.getpid()}"
        self.fifo = tmp_path / "pane-output"
        self.output = bytearray()

    async def tmux(self, *args: str) -> None:
        await trio.run_process(
            [require_tool("tmux"), "-L", self.socket, *args],
            env={**os.environ, "TERM": "xterm"},
        )

    async def until_shown(self, pane: trio.abc.ReceiveStream, text: bytes, count: int) -> None:
        with trio.fail_after(PATIENCE):
            while self.output.count(text) < count:
                self.output += await pane.receive_some(4096)

    @asynccontextmanager
    async def running(self, script: str) -> AsyncIterator[trio.abc.ReceiveStream]:
        """A UTF-8 terminal running `sh -c script`, yielded as the stream of what it shows;
        the script ends with `tmux wait-for -S finished` (see `finished`)."""
        os.mkfifo(self.fifo)
        # Our own private FIFO, so non-blocking mode here touches nothing shared. A writer of
        # our own keeps it from reading as end-of-file before tmux's `cat` opens it.
        reader = os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK)
        keeper = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
        try:
            async with trio.lowlevel.FdStream(reader) as pane:
                await self.tmux("-u", "new-session", "-d", "-s", "echo", "-x", "150", "-y", "30")
                await self.tmux("pipe-pane", "-O", "-t", "echo", f"cat > {self.fifo}")
                await self.tmux("send-keys", "-t", "echo", f"sh -c {shlex.quote(script)}", "Enter")
                yield pane
        finally:
            os.close(keeper)
            await self.tmux("kill-server")

    @property
    def finished(self) -> str:
        return f"tmux -L {self.socket} wait-for -S finished; sleep 600"


async def test_typing_in_a_terminal(server: EchoServer, recorder: Recorder, tmp_path: Path) -> None:
    _, port = server.addresses[0]
    terminal = Terminal(tmp_path)
    after = tmp_path / "after"
    python = shlex.quote(sys.executable)
    check = "import os; print('blocking', os.get_blocking(0), os.get_blocking(1))"
    script = (
        f"{python} -m trio_echo.client --port {port} 2>{tmp_path / 'events.log'}; "
        f"echo status=$? > {after}; {python} -c {shlex.quote(check)} >> {after}; "
        + terminal.finished
    )
    async with terminal.running(script) as pane:
        await recorder.wait_for(Connected)
        await terminal.tmux("send-keys", "-t", "echo", "hello terminal", "Enter")
        await recorder.wait_for(Sent)
        # Once as typed (the terminal's own echo), once as the server sent it back.
        await terminal.until_shown(pane, b"hello terminal", count=2)
        await terminal.tmux("send-keys", "-t", "echo", "exit", "Enter")
        [end] = await recorder.wait_for(Disconnected)
        assert end.reason == "exit"
        with trio.fail_after(PATIENCE):
            await terminal.tmux("wait-for", "finished")
    status, blocking = (await trio.Path(after).read_text()).splitlines()
    assert (status, blocking) == ("status=0", "blocking True True")
    log = await trio.Path(tmp_path / "events.log").read_text()
    assert "sent 15 bytes to the server" in log
    assert "you sent `exit`" in log
