"""The operator's port (`--metrics [HOST:]PORT`): what a service is expected to answer.

- `/metrics`: the Prometheus text format, made by `prometheus_client` (no hand-written
  exposition) from a custom collector that reads our counts when scraped;
- `/healthz`: 200 while the server runs its loop;
- `/readyz`: 200 while it accepts, 503 from the moment a drain or a stop begins, so that a
  load balancer stops sending before connections are cut;
- `/info`: JSON, which server this is (its `--name`, version, uptime) and the asking client's
  address as the server saw it.

Counting must not slow the echo: `Tally` is an `Emit` that the server's events pass through,
and it counts connections, not bytes: a connection's bytes and duration are added once, at
its `disconnected` event; what is live (active connections, their bytes so far) is read from
the server at scrape time. Per-data events (`received`, `sent`) are not looked at.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Final, Protocol, final

import h11
import trio
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from trio_echo import __version__
from trio_echo.events import (
    Connected,
    Disconnected,
    Emit,
    Event,
    Rejected,
    TlsEstablished,
    UdpDropped,
)
from trio_echo.server.accept import peer_of
from trio_echo.server.config import ServerConfig
from trio_echo.server.web import info_document


class EchoServer(Protocol):
    """What the operator's port reads of the server (`core.EchoServer`), when asked."""

    @property
    def config(self) -> ServerConfig: ...

    @property
    def ready(self) -> bool: ...

    def live_bytes(self) -> dict[str, Counter[str]]: ...

    def udp_totals(self) -> int: ...


# Session durations, seconds: from a health check's instant to an hour-long stream.
DURATION_BUCKETS: Final = (0.001, 0.01, 0.1, 1.0, 10.0, 60.0, 600.0, 3600.0)
REQUEST_SECONDS: Final = 5.0  # for a whole request head on this port
MAX_HEAD: Final = 8 * 1024
CONTENT_TYPE: Final = b"text/plain; version=0.0.4; charset=utf-8"


@final
class Tally:
    """Counts of the server's events, for the collector; an `Emit` to tee into."""

    def __init__(self) -> None:
        self.accepted: Counter[str] = Counter()  # by transport
        self.ended: Counter[tuple[str, str]] = Counter()  # by transport and reason
        self.bytes_in: Counter[str] = Counter()  # of ended connections, by transport
        self.bytes_out: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()  # by reason
        self.tls: Counter[str] = Counter()  # handshakes by result
        self.udp_dropped: Counter[str] = Counter()  # by reason
        self.buckets: dict[str, list[int]] = {}  # by transport: counts per duration bucket
        self.duration_sum: defaultdict[str, float] = defaultdict(float)
        self.transport: dict[int, str] = {}  # live connections' transports
        self._handlers: dict[type[Event], Callable[[Any], None]] = {
            Connected: self._connected,
            Disconnected: self._disconnected,
            Rejected: self._rejected,
            TlsEstablished: self._tls,
            UdpDropped: self._udp_dropped,
        }

    def __call__(self, event: Event) -> None:
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def _connected(self, event: Connected) -> None:
        self.accepted[event.transport] += 1
        self.transport[event.conn] = event.transport

    def _disconnected(self, event: Disconnected) -> None:
        transport = self.transport.pop(event.conn, "tcp")
        self.ended[transport, event.reason] += 1
        self.bytes_in[transport] += event.bytes_in
        self.bytes_out[transport] += event.bytes_out
        if event.reason == "tls_error":
            self.tls["failed"] += 1
        counts = self.buckets.setdefault(transport, [0] * (len(DURATION_BUCKETS) + 1))
        counts[bisect_left(DURATION_BUCKETS, event.duration)] += 1
        self.duration_sum[transport] += event.duration

    def _rejected(self, event: Rejected) -> None:
        self.rejected[event.reason] += 1

    def _tls(self, event: TlsEstablished) -> None:
        self.tls["ok"] += 1

    def _udp_dropped(self, event: UdpDropped) -> None:
        self.udp_dropped.update(event.reasons)


def tee(first: Emit, second: Emit) -> Emit:
    def both(event: Event) -> None:
        first(event)
        second(event)

    return both


@final
class EchoCollector(Collector):
    """The `trio_echo_*` families, from a `Tally` and the running server, when scraped."""

    def __init__(self, server: EchoServer, tally: Tally, log_dropped: Callable[[], int]) -> None:
        self._server = server
        self._tally = tally
        self._log_dropped = log_dropped

    def collect(self) -> Iterator[Metric]:
        server, tally = self._server, self._tally
        config = server.config
        info = InfoMetricFamily("trio_echo_build", "the version and the options that matter")
        info.add_metric([], {
            "version": __version__, "name": config.name, "tls": str(config.tls is not None),
            "proxy_protocol": str(config.proxy is not None), "udp": str(config.udp is not None),
            "http": str(config.http is not None), "exit_command": str(config.exit_command),
            "chunk_size": str(config.chunk_size),
            "max_connections": str(config.max_connections),
        })  # fmt: skip
        yield info
        live = server.live_bytes()
        yield _counter(
            "trio_echo_connections_accepted", "connections accepted, by the port they came to",
            ["transport"], tally.accepted.items(),
        )  # fmt: skip
        yield _counter(
            "trio_echo_connections_ended", "connections ended, by transport and reason",
            ["transport", "reason"], tally.ended.items(),
        )  # fmt: skip
        active = GaugeMetricFamily(
            "trio_echo_connections_active", "connections being served now", labels=["transport"]
        )
        for transport, count in Counter(tally.transport.values()).items():
            active.add_metric([transport], count)
        yield active
        for direction, ended in (("in", tally.bytes_in), ("out", tally.bytes_out)):
            totals = Counter(ended)
            for transport, count in live[direction].items():
                totals[transport] += count
            yield _counter(
                f"trio_echo_bytes_{'received' if direction == 'in' else 'sent'}",
                f"bytes {'received from' if direction == 'in' else 'echoed to'} clients, "
                "by transport (message bytes over WebSocket)",
                ["transport"], totals.items(),
            )  # fmt: skip
        duration = HistogramMetricFamily(
            "trio_echo_session_duration_seconds", "how long sessions lasted", labels=["transport"]
        )
        for transport, counts in tally.buckets.items():
            cumulative, buckets = 0, []
            for bound, count in zip([*map(str, DURATION_BUCKETS), "+Inf"], counts, strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            duration.add_metric([transport], buckets, tally.duration_sum[transport])
        yield duration
        yield _counter(
            "trio_echo_connections_rejected", "connections turned away, by reason",
            ["reason"], tally.rejected.items(),
        )  # fmt: skip
        yield _counter(
            "trio_echo_tls_handshakes", "TLS handshakes, by result", ["result"], tally.tls.items()
        )
        datagrams = server.udp_totals()
        yield _counter(
            "trio_echo_udp_datagrams_answered", "UDP datagrams echoed", [], [((), datagrams)]
        )
        yield _counter(
            "trio_echo_udp_datagrams_dropped", "UDP datagrams not answered, by reason",
            ["reason"], tally.udp_dropped.items(),
        )  # fmt: skip
        yield _counter(
            "trio_echo_log_events_dropped", "events left out of the log (it fell behind)",
            [], [((), self._log_dropped())],
        )  # fmt: skip


def _counter(name: str, about: str, labels: list[str], items: Any) -> CounterMetricFamily:
    family = CounterMetricFamily(name, about, labels=labels)
    for key, value in items:
        values = [key] if isinstance(key, str) else list(key)
        family.add_metric(values, value)
    return family


def registry_for(collector: EchoCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    ProcessCollector(namespace="trio_echo", registry=registry)
    return registry


# ---- the port ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    content_type: bytes = b"text/plain; charset=utf-8"


@final
class OperatorPort:
    """Answers one request a connection on the operator's port."""

    def __init__(self, server: EchoServer, registry: CollectorRegistry) -> None:
        self._server = server
        self._registry = registry
        self._started = time.monotonic()

    def answer(self, target: str, peer: str | None) -> Answer:
        path = target.split("?", 1)[0]
        if path == "/metrics":
            return Answer(200, generate_latest(self._registry), CONTENT_TYPE)
        if path == "/healthz":
            return Answer(200, b"ok\n")
        if path == "/readyz":
            if self._server.ready:
                return Answer(200, b"ready\n")
            return Answer(503, b"not ready: draining or stopping\n")
        if path == "/info":
            uptime = time.monotonic() - self._started
            document = info_document(self._server.config.name, uptime, peer, None)
            return Answer(200, document, b"application/json")
        return Answer(404, b"nothing here: /metrics, /healthz, /readyz, /info\n")

    async def handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            http = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
            request: h11.Request | None = None
            with trio.move_on_after(REQUEST_SECONDS):
                try:
                    while request is None:
                        event = http.next_event()
                        if isinstance(event, h11.Request):
                            request = event
                        elif event is h11.NEED_DATA:
                            http.receive_data(await stream.receive_some(MAX_HEAD))
                        else:
                            return
                except (h11.RemoteProtocolError, trio.BrokenResourceError):
                    return
            if request is None:
                return
            peer = peer_of(stream)
            answer = self.answer(request.target.decode("ascii", "replace"), peer)
            if request.method not in (b"GET", b"HEAD"):
                answer = Answer(405, b"only GET\n")
            body = b"" if request.method == b"HEAD" else answer.body
            headers = [
                (b"Content-Type", answer.content_type),
                (b"Content-Length", str(len(body)).encode()),
                (b"Connection", b"close"),
            ]
            phrase = HTTPStatus(answer.status).phrase.encode()
            data = http.send(h11.Response(status_code=answer.status, headers=headers,
                                          reason=phrase))  # fmt: skip
            data = (data or b"") + (http.send(h11.Data(data=body)) or b"") if body else data
            data = (data or b"") + (http.send(h11.EndOfMessage()) or b"")
            with trio.move_on_after(REQUEST_SECONDS), suppress(trio.BrokenResourceError):
                await stream.send_all(data)
