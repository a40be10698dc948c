"""pytest fixtures for a real echo server in your own tests; installing trio-echo registers
them (entry point `pytest11`).

- `echo_server`: for trio tests (pytest-trio): an `EchoServer` on 127.0.0.1, a free port,
  running in the test's own trio run; stopped after the test.
- `echo_server_sync`: the same for tests that are not trio tests: the server runs in a
  thread with a trio run of its own, started before the test and stopped after it.
- `echo_server_factory`: for trio tests that want several servers, or options per server:
  ``async with echo_server_factory(chunk_size=16) as server: ...``.

Both fixtures hand over an `EchoServerUnderTest`: `address` (host, port), `host`, `port`,
the `events` the server emitted (its log as objects, so a test can assert what the server
saw; in a trio test, ``await echo_server.wait_for(Disconnected)``), and the `server` itself.
Options (the fields of `ServerConfig`: `chunk_size`, `exit_command`, `max_connections`,
`idle_timeout`, `tls`, `udp=UdpConfig()`, `proxy=ProxyConfig()`, ...) come from a marker:
``@pytest.mark.echo_server(exit_command=False)``; host and port default to 127.0.0.1 and a
free port.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio

from trio_echo.events import Event
from trio_echo.server import EchoServer, ServerConfig

START_TIMEOUT = 10.0
WAIT_TIMEOUT = 10.0


@dataclass
class EchoServerUnderTest:
    server: EchoServer = field(init=False)  # made with `record` as its event sink
    events: list[Event] = field(default_factory=list)
    _changed: trio.Event = field(default_factory=trio.Event, repr=False)

    def record(self, event: Event) -> None:
        """The server's `emit`: keep the event, and wake whoever waits for one."""
        self.events.append(event)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, kind: type[Event], count: int = 1) -> list[Event]:
        """In a trio test: wait until the server has emitted `count` events of `kind` (for
        at most WAIT_TIMEOUT seconds: a test that waits longer has failed)."""
        with trio.fail_after(WAIT_TIMEOUT):
            while len(self.of(kind)) < count:
                await self._changed.wait()
        return self.of(kind)

    @property
    def address(self) -> tuple[str, int]:
        return self.server.addresses[0] if self.server.addresses else self.server.udp_addresses[0]

    @property
    def host(self) -> str:
        return self.address[0]

    @property
    def port(self) -> int:
        return self.address[1]

    def of(self, kind: type[Event]) -> list[Event]:
        """The events of one kind, e.g. ``echo_server.of(Disconnected)``."""
        return [event for event in self.events if isinstance(event, kind)]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "echo_server(**options): ServerConfig fields for the echo_server fixtures",
    )


def _marked_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    marker = request.node.get_closest_marker("echo_server")
    return dict(marker.kwargs) if marker is not None else {}


@asynccontextmanager
async def _running(**options: Any) -> AsyncIterator[EchoServerUnderTest]:
    config = ServerConfig(**{"host": "127.0.0.1", "port": 0, **options})
    under_test = EchoServerUnderTest()
    under_test.server = EchoServer(config, emit=under_test.record)
    async with trio.open_nursery() as nursery:
        await nursery.start(under_test.server.run)
        yield under_test
        under_test.server.stop()


@pytest.fixture
def echo_server_factory(
    request: pytest.FixtureRequest,
) -> Callable[..., AbstractAsyncContextManager[EchoServerUnderTest]]:
    """Start servers inside a trio test: ``async with echo_server_factory(**options)``."""
    marked = _marked_options(request)
    return lambda **options: _running(**{**marked, **options})


@pytest.fixture
async def echo_server(request: pytest.FixtureRequest) -> AsyncIterator[EchoServerUnderTest]:
    """A running echo server in the test's trio run (a pytest-trio test)."""
    async with _running(**_marked_options(request)) as running:
        yield running


@pytest.fixture
def echo_server_sync(request: pytest.FixtureRequest) -> Iterator[EchoServerUnderTest]:
    """A running echo server in a thread of its own, for tests that are not trio tests."""
    options = _marked_options(request)
    ready = threading.Event()
    handed: dict[str, Any] = {}

    async def main() -> None:
        done = trio.Event()
        async with _running(**options) as running:
            handed.update(running=running, token=trio.lowlevel.current_trio_token(), done=done)
            ready.set()
            await done.wait()  # the test has ended; leaving this stops the server gracefully

    def run() -> None:
        try:
            trio.run(main)
        except BaseException as exc:  # said in the test's thread, if it never started
            handed["error"] = exc
        finally:
            ready.set()

    thread = threading.Thread(target=run, name="trio-echo server", daemon=True)
    thread.start()
    ready.wait(START_TIMEOUT)
    if "running" not in handed:
        raise RuntimeError(f"the echo server did not start: {handed.get('error')!r}")
    try:
        yield handed["running"]
    finally:
        trio.from_thread.run_sync(handed["done"].set, trio_token=handed["token"])
        thread.join(START_TIMEOUT)
