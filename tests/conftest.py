"""Shared test machinery: hypothesis profiles, an in-process server, external tools."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import pytest
import trio
import trustme
from hypothesis import HealthCheck, settings

from tests.contract import check_event, problems
from trio_echo import i18n, pytest_plugin
from trio_echo.eventlog import COPY_VARIABLE
from trio_echo.events import Event, Words
from trio_echo.rendering import say
from trio_echo.server import EchoServer, ServerConfig

# Explicit settings: "dev" for quick local runs, "ci" (chosen when CI=true) tries more cases.
# No example database is written to the repository (.hypothesis/ is git-ignored).
settings.register_profile(
    "dev",
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "ci",
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
# For scripts/fuzz.py: the fuzz targets (tests/test_fuzz_targets.py) at scale, a round at a time.
settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "5000")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
    database=None,
)
# The tests read English, whatever this machine's locale: LANGUAGE comes first for gettext, in
# this process and in every program a test starts. test_i18n.py sets its own.
os.environ["LANGUAGE"] = "en"
i18n.use()

settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") == "true" else "dev")
)

# Every event any process of the suite logs is copied here as JSON (trio_echo.eventlog), and
# checked against the schema when the session ends (`every_logged_event_keeps_the_contract`).
# Readable and writable by all: some tests run the programs as another user (setpriv).
_COPIES = tempfile.mkdtemp(prefix="trio-echo-events-")
os.chmod(_COPIES, 0o755)
EVENT_COPY = os.path.join(_COPIES, "events.jsonl")
with open(EVENT_COPY, "w", encoding="utf-8"):
    pass
os.chmod(EVENT_COPY, 0o666)
os.environ[COPY_VARIABLE] = EVENT_COPY


@pytest.fixture(scope="session", autouse=True)
def every_logged_event_keeps_the_contract() -> Iterator[None]:
    """After the whole session: each event the suite's processes logged, valid by the schema
    (those of in-process servers are checked as they happen: `Recorder`, the plugin)."""
    yield
    with open(EVENT_COPY, encoding="utf-8") as copies:
        lines = [line for line in copies if line.strip()]
    bad = []
    for line in lines:
        found = problems(json.loads(line))
        if found:
            bad.append(f"{line.strip()[:300]}: {'; '.join(found)}")
    shutil.rmtree(_COPIES, ignore_errors=True)
    if bad:
        pytest.fail(
            f"{len(bad)} of {len(lines)} logged events break the schema:\n" + "\n".join(bad[:20])
        )


def _checked(
    record: Callable[[pytest_plugin.EchoServerUnderTest, Event], None],
) -> Callable[[pytest_plugin.EchoServerUnderTest, Event], None]:
    def checking(self: pytest_plugin.EchoServerUnderTest, event: Event) -> None:
        check_event(event)
        record(self, event)

    return checking


# The plugin's servers, in our own tests, keep the contract too.
pytest_plugin.EchoServerUnderTest.record = _checked(pytest_plugin.EchoServerUnderTest.record)  # type: ignore[method-assign, assignment]


def require_tool(name: str) -> str:
    """The path of an external tool; skip without it locally, but fail in CI, which must
    have installed it (.ci/run)."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is not installed, but CI must install it (.ci/run)")
        pytest.skip(f"{name} is not installed")
    return path


E = TypeVar("E", bound=Event)


def said(words: Words | None) -> str:
    """An event's explanation as the log would say it (in the language in use), or ""."""
    return "" if words is None else say(words)


class Recorder:
    """An `Emit` that keeps the events, and lets a test wait for one."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._changed = trio.Event()

    def __call__(self, event: Event) -> None:
        check_event(event)  # every event of an in-process server keeps the JSON contract
        self.events.append(event)
        self._changed.set()
        self._changed = trio.Event()

    def of(self, kind: type[E]) -> list[E]:
        return [event for event in self.events if isinstance(event, kind)]

    async def wait_for(self, kind: type[E], count: int = 1) -> list[E]:
        with trio.fail_after(10):
            while len(self.of(kind)) < count:
                await self._changed.wait()
        return self.of(kind)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def server(recorder: Recorder) -> AsyncIterator[EchoServer]:
    """A real server on 127.0.0.1, a free port, in this process; stopped after the test."""
    async with trio.open_nursery() as nursery:
        echo = EchoServer(ServerConfig(port=0, shutdown_timeout=2), emit=recorder)
        await nursery.start(echo.run)
        yield echo
        echo.stop()


@contextmanager
def filtered_port() -> Iterator[int]:
    """A loopback port where connecting times out, as behind a firewall that drops: a
    listener whose accept queue is full makes the kernel drop further SYNs."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        try:
            for _ in range(4):
                filler = socket.socket()
                fillers.append(filler)
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
            yield port
        finally:
            for filler in fillers:
                filler.close()


@contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port where connecting is refused: bound, never listening."""
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))
        yield reserved.getsockname()[1]


@dataclass(frozen=True)
class TlsFiles:
    """Certificates for TLS tests, made by trustme (a CA that exists for this test only)."""

    ca: trustme.CA
    ca_file: str  # the CA's certificate: what a client trusts
    cert: str  # the server's certificate chain for localhost, 127.0.0.1 and ::1
    key: str
    combined: str  # certificate and key in one file
    client_ca_file: str  # another CA, which signs the client certificate
    client_cert: str
    client_key: str


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    folder = tmp_path_factory.mktemp("tls")
    ca, client_ca = trustme.CA(), trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1", "::1")
    client = client_ca.issue_cert("alice@example.test", common_name="alice")
    paths: dict[str, str] = {}
    for name, blob in {
        "ca.pem": ca.cert_pem,
        "cert.pem": server.cert_chain_pems[0],
        "key.pem": server.private_key_pem,
        "client-ca.pem": client_ca.cert_pem,
        "client-cert.pem": client.cert_chain_pems[0],
        "client-key.pem": client.private_key_pem,
    }.items():
        blob.write_to_path(str(folder / name))
        paths[name] = str(folder / name)
    combined = folder / "combined.pem"
    combined.write_bytes(server.private_key_and_cert_chain_pem.bytes())
    return TlsFiles(
        ca=ca,
        ca_file=paths["ca.pem"],
        cert=paths["cert.pem"],
        key=paths["key.pem"],
        combined=str(combined),
        client_ca_file=paths["client-ca.pem"],
        client_cert=paths["client-cert.pem"],
        client_key=paths["client-key.pem"],
    )
