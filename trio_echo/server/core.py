"""The server that holds the layers together: it binds, accepts, and runs each connection
through PROXY (if configured), TLS (if configured) and the echo, under one lifecycle.

Embedding it needs no subprocess and no sleep::

    async with trio.open_nursery() as nursery:
        server = await nursery.start(trio_echo.serve)   # bound and listening now
        host, port = server.addresses[0]
        ...
        server.stop()
"""

from __future__ import annotations

import itertools
import os
import socket
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Literal, Protocol, final

import trio

from trio_echo import __version__, capabilities, cli, tls, udp
from trio_echo.events import (
    Connected,
    Disconnected,
    DisconnectReason,
    Emit,
    LimitWarning,
    Listening,
    Rejected,
    RejectReason,
    ServerStarting,
    Stopped,
    TlsEstablished,
    Words,
    ignore,
    reachability,
    says,
)
from trio_echo.i18n import N_
from trio_echo.replay import ReplayStream
from trio_echo.server import accept, proxy
from trio_echo.server.config import ServerConfig, UdpConfig, connections_for
from trio_echo.server.echo import echo_until_done
from trio_echo.server.lifecycle import LINGER_SECONDS, Connection, Lifecycle
from trio_echo.server.transports import Transport, transport_for
from trio_echo.server.web import WEB_READ, WebConfig, WebSession, info_document

if TYPE_CHECKING:
    from trio_echo.server import operator
from trio_echo.tls_stream import MAX_OWED, LeftUnread, ServerTlsStream


@final
class EchoServer:
    """An RFC 862 echo server with the `exit` command, an event log and graceful shutdown.

    Either `await nursery.start(server.run)` (binds, then serves), or `listeners = await
    server.open()` then `await nursery.start(server.serve, listeners)`; both hand this object
    to `task_status.started` once every listener is bound. `handle` serves one connection
    over any half-closeable stream. `inherited`: sockets bound by someone else (systemd),
    served instead of binding.
    """

    def __init__(
        self,
        config: ServerConfig | None = None,
        *,
        emit: Emit = ignore,
        inherited: Sequence[socket.socket] = (),
    ) -> None:
        self.config = ServerConfig() if config is None else config
        self.inherited = inherited
        self.addresses: list[tuple[str, int]] = []
        self.udp_addresses: list[tuple[str, int]] = []
        self.udp_endpoints: list[udp.UdpEcho] = []
        self.http_listeners: list[trio.SocketListener] = []  # --http: the page, WebSockets
        self.http_addresses: list[tuple[str, int]] = []
        # --metrics: the events pass through a tally on their way to the log (prometheus_client
        # is imported only then).
        self.tally: operator.Tally | None = None
        self._emit = emit
        if self.config.metrics is not None:
            from trio_echo.server import operator

            self.tally = operator.Tally()
            self._emit = operator.tee(emit, self.tally)
        self.metrics_listeners: list[trio.SocketListener] = []
        self.metrics_addresses: list[tuple[str, int]] = []
        self.log_dropped: Callable[[], int] = lambda: 0  # the log's count, for the metrics
        self._ids = itertools.count(1)
        self._started = 0.0  # when it began to serve (trio's clock), for /info
        self._life = Lifecycle(
            shutdown_timeout=self.config.shutdown_timeout,
            drain_timeout=self.config.drain_timeout,
            emit=emit,
        )
        self._served = self._bytes_in = self._bytes_out = 0

    # ---- the server's life ----------------------------------------------------------------

    async def open(self) -> list[trio.SocketListener]:
        """Announce the settings and bind; raises OSError (address in use, bad host...)."""
        config = self.config
        self._emit(_starting(config, activated=bool(self.inherited)))
        if config.fd_limit is not None:
            room = connections_for(config.fd_limit)
            if config.max_connections > room:
                self._emit(LimitWarning(config.max_connections, config.fd_limit, room))
        if self.inherited:
            listeners, datagrams = _adopt(self.inherited)
        else:
            listeners, datagrams = await _bind(config)
        if config.http is not None:
            self.http_listeners = await accept.open_listeners(
                config.http.host or config.host, config.http.port, reuse_port=config.reuse_port
            )
        if config.metrics is not None:
            self.metrics_listeners = await trio.open_tcp_listeners(
                config.metrics.port, host=config.metrics.host
            )
        settings = config.udp or UdpConfig()  # sockets handed over serve UDP anyway
        self.udp_endpoints = [
            udp.UdpEcho(
                sock,
                emit=self._emit,
                data_events=config.data_events,
                rate=settings.rate,
                allow_low_ports=settings.allow_low_ports,
                access=config.access or None,
            )
            for sock in datagrams
        ]
        return listeners

    async def run(
        self, *, task_status: trio.TaskStatus[EchoServer] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Bind, serve until `stop`, then return once every connection has ended."""
        await self.serve(await self.open(), task_status=task_status)

    async def serve(
        self,
        listeners: Sequence[trio.SocketListener],
        *,
        task_status: trio.TaskStatus[EchoServer] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve on bound listeners until `stop`; returns when every connection has ended."""
        started = self._started = trio.current_time()
        activated = bool(self.inherited)
        pin = None if self.config.tls is None else self.config.tls.fingerprint
        tcp = [listener.socket for listener in listeners]
        self.addresses = _announce(tcp, "tcp", pin, activated, self._emit)
        udp_socks = [endpoint.sock for endpoint in self.udp_endpoints]
        self.udp_addresses = _announce(udp_socks, "udp", None, activated, self._emit)
        web = [listener.socket for listener in self.http_listeners]
        self.http_addresses = _announce(web, "http", pin, False, self._emit)
        ops = [listener.socket for listener in self.metrics_listeners]
        self.metrics_addresses = _announce(ops, "metrics", None, False, self._emit)
        async with trio.open_nursery() as operating:  # the operator's port: to the very end
            if self.metrics_listeners:
                port = self._operator_port()
                operating.start_soon(trio.serve_listeners, port.handle, self.metrics_listeners)
            await self._serve_until_stopped(listeners, task_status)
            operating.cancel_scope.cancel()
        totals = (self._served, self._bytes_in, self._bytes_out)
        self._emit(_stopped(totals, trio.current_time() - started, self.udp_endpoints))

    async def _serve_until_stopped(
        self, listeners: Sequence[trio.SocketListener], task_status: trio.TaskStatus[EchoServer]
    ) -> None:
        life = self._life
        active = partial(len, life.active)
        with life.connections:
            async with trio.open_nursery() as connections:
                with life.accepting:
                    async with trio.open_nursery() as accepting:
                        accepting.start_soon(
                            partial(
                                accept.serve_listeners,
                                self._serve_accepted,
                                listeners,
                                handler_nursery=connections,
                                emit=self._emit,
                                active=active,
                            )
                        )
                        if self.http_listeners:
                            accepting.start_soon(
                                partial(
                                    accept.serve_listeners,
                                    partial(self._serve_accepted, web=True),
                                    self.http_listeners,
                                    handler_nursery=connections,
                                    emit=self._emit,
                                    active=active,
                                )
                            )
                        for endpoint in self.udp_endpoints:  # datagrams: no sessions to end
                            accepting.start_soon(endpoint.run)
                        accepting.start_soon(life.run_drain)
                        task_status.started(self)

    def stop(self, reason: str = "request") -> None:
        """Stop accepting, finish echoing what was read, then end. Safe to call again. With
        a drain time, first drain (`Lifecycle.stop`)."""
        self._life.stop(reason)

    def abort(self) -> None:
        """Stop at once: cancel every connection, even mid-echo."""
        self._life.abort()

    @property
    def active(self) -> int:
        """Connections being served now."""
        return len(self._life.active)

    @property
    def ready(self) -> bool:
        """Accepting, and neither draining nor stopping (the operator's /readyz)."""
        return not (self._life.stopping or self._life.draining)

    def live_bytes(self) -> dict[str, Counter[str]]:
        """Bytes in and out so far of the connections being served, by transport."""
        transports = {} if self.tally is None else self.tally.transport
        totals: dict[str, Counter[str]] = {"in": Counter(), "out": Counter()}
        for conn in self._life.active.values():
            transport = transports.get(conn.id, "tcp")
            totals["in"][transport] += conn.bytes_in
            totals["out"][transport] += conn.bytes_out
        return totals

    def udp_totals(self) -> int:
        """UDP datagrams answered so far."""
        return sum(endpoint.counts.datagrams_out for endpoint in self.udp_endpoints)

    def _operator_port(self) -> operator.OperatorPort:
        from trio_echo.server import operator

        assert self.tally is not None
        collector = operator.EchoCollector(self, self.tally, lambda: self.log_dropped())
        return operator.OperatorPort(self, operator.registry_for(collector))

    # ---- one connection -----------------------------------------------------------------

    async def _serve_accepted(self, stream: trio.SocketStream, *, web: bool = False) -> None:
        """An accepted connection's task: the limit, then the PROXY layer, then `handle`.
        `web`: it came to the HTTP port."""
        life, config = self._life, self.config
        if len(life.active) + len(life.greeting) >= config.max_connections:
            await self._reject(stream, "max_connections")
            return
        if config.proxy is None:
            if config.access and not config.access.allows(_host_of(stream)):
                await self._reject(stream, "denied")
                return
            await self.handle(stream, web=web)
            return
        try:
            arrival, replay = await proxy.receive_header(
                stream, config.proxy, life, config.idle_timeout
            )
            if arrival.health and life.draining:
                raise proxy.Refused("draining")
            client = arrival.source or _host_of(stream)  # the real client, where it is named
            if config.access and not arrival.health and not config.access.allows(client):
                raise proxy.Refused("denied")
        except proxy.Refused as refused:
            await self._reject(stream, refused.reason, refused.detail)
            return
        await self.handle(replay, arrival, web=web)

    async def _reject(
        self,
        stream: trio.abc.HalfCloseableStream,
        reason: RejectReason,
        detail: Words | None = None,
    ) -> None:
        limit = self.config.max_connections
        self._emit(Rejected(accept.peer_of(stream), reason, self.active, limit, detail))
        await trio.aclose_forcefully(stream)

    async def handle(
        self,
        stream: trio.abc.HalfCloseableStream,
        arrival: proxy.Arrival | None = None,
        *,
        web: bool = False,
    ) -> DisconnectReason:
        """Serve one connection from start to end (TLS if configured, then the echo, or the
        HTTP side for `web`), and return why it ended. `arrival`: what its PROXY header said.
        Never raises for the connection's own trouble: that is the `disconnected` event's
        reason and detail."""
        conn = Connection(next(self._ids))
        life, config = self._life, self.config
        life.active[conn.id] = conn
        self._served += 1
        began = trio.current_time()
        reason: DisconnectReason = "shutdown"  # what it is if cancelled from outside
        detail: Words | None = None
        session: Session | None = None
        try:
            if life.stopping:
                life.stop_connection(conn)
            self._emit(_connected(conn, stream, arrival, self.active, web))
            if config.max_duration is not None:
                conn.reading.deadline = began + config.max_duration
            with conn.reading:
                secured: trio.abc.Stream = stream
                if config.tls is not None:
                    secured = await _secure(stream, config, conn, self._emit)
                session = self._session(secured, conn, web, arrival, stream)
                reason, detail = await session.run()
            timed_out = conn.reading.cancelled_caught and not life.stopping  # not a stop
            if config.max_duration is not None and timed_out:
                reason = "max_duration"  # its deadline passed
        except tls.TlsFailed as exc:
            reason, detail = "tls_error", exc.words
        except LeftUnread:
            text = N_("it left {bytes} bytes of TLS records unread while sending more")
            reason, detail = "stalled", says("tls_unread", text, bytes=MAX_OWED)
        except trio.BrokenResourceError as exc:
            reason, detail = "reset", says("broken", "{error}", error=cli.describe(exc))
        except Exception as exc:  # one client's trouble must never reach the server
            error = cli.describe(exc)
            reason, detail = "error", says(type(exc).__name__, "{error}", error=error)
        finally:
            del life.active[conn.id]
            self._bytes_in += conn.bytes_in
            self._bytes_out += conn.bytes_out
            with life.closing(2 * LINGER_SECONDS):  # even when cancelled: close, then report
                if session is None:  # no handshake: nothing to close politely
                    await trio.aclose_forcefully(stream)
                else:
                    await session.close(reason)
            duration = trio.current_time() - began
            self._emit(
                Disconnected(conn.id, reason, conn.bytes_in, conn.bytes_out, duration, detail)
            )
        return reason

    def _session(
        self,
        secured: trio.abc.Stream,
        conn: Connection,
        web: bool,
        arrival: proxy.Arrival | None,
        stream: trio.abc.Stream,
    ) -> Session:
        """The last layer: the echo, or the HTTP side (whose wire bytes are not the echo's:
        `conn` counts its messages)."""
        config = self.config
        if not web:
            io = transport_for(secured, conn, config.chunk_size, config.idle_timeout)
            return EchoSession(io, conn, self._life, config, self._emit)
        assert config.http is not None
        wire = Connection(conn.id)
        # Reads of whole frames: --chunk-size is the TCP echo's portion, not a frame's.
        io = transport_for(secured, wire, WEB_READ, config.idle_timeout)
        settings = WebConfig(
            exit_command=config.exit_command,
            idle_timeout=config.idle_timeout,
            data_events=config.data_events,
            max_message=config.http.max_message,
            max_bytes=config.max_bytes,
            info=info_document(
                config.name,
                trio.current_time() - self._started,
                accept.peer_of(stream) if arrival is None else arrival.peer,
                None if arrival is None else arrival.via,
            ),
        )
        return WebSession(io, conn, self._life, settings, self._emit)


class Session(Protocol):
    """A connection's last layer, over its transport: it runs until the session ends, and
    owns its polite close."""

    async def run(self) -> tuple[DisconnectReason, Words | None]: ...

    async def close(self, reason: DisconnectReason) -> None: ...


@final
class EchoSession:
    """The echo of bytes (`echo.py`): the TCP port's last layer."""

    def __init__(
        self, io: Transport, conn: Connection, life: Lifecycle, config: ServerConfig, emit: Emit
    ) -> None:
        self._io, self._conn, self._life, self._config, self._emit = io, conn, life, config, emit

    async def run(self) -> tuple[DisconnectReason, Words | None]:
        config = self._config
        reason = await echo_until_done(
            self._io,
            self._conn,
            self._life,
            chunk_size=config.chunk_size,
            exit_command=config.exit_command,
            report=self._emit if config.data_events else None,
            idle_timeout=config.idle_timeout,
            max_bytes=config.max_bytes,
        )
        return reason, None

    async def close(self, reason: DisconnectReason) -> None:
        await self._io.close(reason)


async def _secure(
    stream: trio.abc.HalfCloseableStream, config: ServerConfig, conn: Connection, emit: Emit
) -> ServerTlsStream:
    """The TLS layer: a handshake (bounded by its own timeout, or the idle timeout if that is
    shorter), reported as an event."""
    assert config.tls is not None
    secured, established = await tls.server_handshake(stream, config.tls, config.idle_timeout)
    emit(
        TlsEstablished(
            conn=conn.id,
            version=established.version,
            cipher=established.cipher,
            sni=established.sni,
            client_cert=established.client_cert,
        )
    )
    return secured


async def _bind(
    config: ServerConfig,
) -> tuple[list[trio.SocketListener], list[trio.socket.SocketType]]:
    """The TCP listeners and the UDP sockets the configuration asks for, bound."""
    listeners: list[trio.SocketListener] = []
    if config.tcp:
        listeners = await accept.open_listeners(
            config.host, config.port, reuse_port=config.reuse_port
        )
    if config.udp is None:
        return listeners, []
    # UDP on the same port as TCP (as inetd's echo): the one TCP chose, for port 0.
    port = listeners[0].socket.getsockname()[1] if listeners else config.port
    try:
        return listeners, await udp.UdpEcho.bind(config.host, port, config.reuse_port)
    except BaseException:
        for listener in listeners:
            listener.socket.close()
        raise


def _adopt(
    socks: Sequence[socket.socket],
) -> tuple[list[trio.SocketListener], list[trio.socket.SocketType]]:
    """Sockets bound by someone else: streams as TCP listeners, datagram sockets for UDP,
    whatever the configuration's `tcp` and `udp` say."""
    listeners, datagrams = [], []
    for sock in socks:
        adopted = trio.socket.from_stdlib_socket(sock)
        if sock.type == socket.SOCK_DGRAM:
            udp.ask_destination(adopted)
            datagrams.append(adopted)
        else:
            listeners.append(trio.SocketListener(adopted))
    return listeners, datagrams


def _announce(
    socks: Sequence[trio.socket.SocketType],
    transport: Literal["tcp", "udp", "http", "metrics"],
    pin: str | None,
    activated: bool,
    emit: Emit,
) -> list[tuple[str, int]]:
    """A `listening` event for each socket served; their addresses."""
    addresses = []
    for sock in socks:
        host, port = sock.getsockname()[:2]
        addresses.append((host, port))
        emit(Listening(host, port, reachability(host), pin, transport, activated))
    return addresses


def _stopped(
    totals: tuple[int, int, int], uptime: float, endpoints: Sequence[udp.UdpEcho]
) -> Stopped:
    connections, bytes_in, bytes_out = totals
    counts = [endpoint.counts for endpoint in endpoints]
    return Stopped(
        connections=connections,
        bytes_in=bytes_in,
        bytes_out=bytes_out,
        uptime=uptime,
        datagrams_in=sum(c.datagrams_in for c in counts),
        datagrams_out=sum(c.datagrams_out for c in counts),
        udp_bytes_in=sum(c.bytes_in for c in counts),
        udp_bytes_out=sum(c.bytes_out for c in counts),
    )


def _starting(config: ServerConfig, *, activated: bool) -> ServerStarting:
    return ServerStarting(
        version=__version__,
        pid=os.getpid(),
        host=config.host,
        port=config.port,
        chunk_size=config.chunk_size,
        exit_command=config.exit_command,
        shutdown_timeout=config.shutdown_timeout,
        max_connections=config.max_connections,
        idle_timeout=config.idle_timeout,
        tls=None if config.tls is None else config.tls.certificate,
        fd_limit=config.fd_limit,
        activated=activated,
        system=capabilities.system(),
        stop_signals=config.stop_signals,
        server_name=config.name,
    )


def _host_of(stream: trio.abc.Stream) -> str:
    """The peer's address alone ("" where it has none: a Unix socket, memory, gone)."""
    inner = stream.inner if isinstance(stream, ReplayStream) else stream
    if not isinstance(inner, trio.SocketStream):
        return ""
    try:
        name = inner.socket.getpeername()
    except OSError:
        return ""
    return str(name[0]) if isinstance(name, tuple) else ""


def _connected(
    conn: Connection,
    stream: trio.abc.Stream,
    arrival: proxy.Arrival | None,
    active: int,
    web: bool,
) -> Connected:
    transport: Literal["tcp", "http"] = "http" if web else "tcp"
    if arrival is None:
        return Connected(conn.id, accept.peer_of(stream), active, transport=transport)
    return Connected(conn.id, arrival.peer, active, arrival.via, arrival.health, transport)


async def serve(
    config: ServerConfig | None = None,
    *,
    emit: Emit = ignore,
    task_status: trio.TaskStatus[EchoServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run an `EchoServer` with `config` until it is stopped.

    ``server = await nursery.start(partial(trio_echo.serve, ServerConfig(port=0)))`` returns
    the running server, already listening: ``server.addresses``, ``server.stop()``.
    """
    await EchoServer(config, emit=emit).run(task_status=task_status)
