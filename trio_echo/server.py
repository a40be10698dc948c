"""The echo server: one connection's life, the listening server around it, and `main`.

Embedding it (tests, ours and other people's) needs no subprocess and no sleep::

    async with trio.open_nursery() as nursery:
        server = await nursery.start(trio_echo.serve)   # bound and listening now
        host, port = server.addresses[0]
        ...
        server.stop()

Shutdown is cancellation, never a polled flag. Each connection reads inside its own
`reading` cancel scope, and echoes inside a shielded scope: `stop` cancels every `reading`
scope (no new byte is read) and puts a deadline on the echoes in flight (the bytes already
read still go back, for at most `shutdown_timeout` seconds). The connections' nursery gets
the same deadline, plus the short linger, as a hard upper bound.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import itertools
import os
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Final, final

import trio

from trio_echo import __version__, capabilities, cli, i18n, systemd, tls, workers
from trio_echo import udp as udp_module
from trio_echo.binding import bind_all
from trio_echo.events import (
    AcceptPaused,
    AcceptResumed,
    Connected,
    Disconnected,
    DisconnectReason,
    Emit,
    LimitWarning,
    Listening,
    Received,
    Rejected,
    RejectReason,
    Sent,
    ServerStarting,
    Stopped,
    TlsEstablished,
    count_clients,
    format_address,
    ignore,
    preview,
    quoted,
    reachability,
)
from trio_echo.i18n import N_, _
from trio_echo.lifecycle import LINGER_SECONDS, Connection, Lifecycle
from trio_echo.nonblocking import RawSocket
from trio_echo.protocol import ExitDetector
from trio_echo.proxy_header import BadProxyHeader, ProxyHeaderReader
from trio_echo.tls_stream import ServerTlsStream

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 7007  # RFC 862's echo port is 7; 7007 needs no privileges
DEFAULT_CHUNK_SIZE: Final = 1024
DEFAULT_SHUTDOWN_TIMEOUT: Final = 5.0
# Below the 1024 descriptors a process gets by default on Linux, leaving room for the rest.
DEFAULT_MAX_CONNECTIONS: Final = 1000
# accept() errors that mean "out of resources for now" (as in trio's serve_listeners:
# EMFILE, ENFILE, ENOMEM, ENOBUFS, `cli.error_kinds`): reported once, retried at this
# interval, and reported again once accepting works.
ACCEPT_RETRY_SECONDS: Final = 0.1
# A read at least this large that fills the buffer is followed at once by the next read, up
# to STREAK reads before the echo loop's checkpoint (see `_echo_until_done`).
LARGE_READ: Final = 16 * 1024
STREAK: Final = 8
# Descriptors kept aside from the connections: the log, listeners, UDP sockets, the worker
# threads' wake-up pipes, a certificate being read... (a quarter of a small limit).
FD_RESERVE: Final = 64
DEFAULT_PROXY_TIMEOUT: Final = 5.0  # seconds a balancer has to send its PROXY header
STATUS_SECONDS: Final = 1.0  # how often systemd's status line may change
LISTEN_BACKLOG: Final = 0xFFFF  # as trio does: the kernel lowers it to net.core.somaxconn
# The ends after which a TLS connection is closed with a close_notify; after the others
# (the peer broke the connection, or never completed a handshake) it is simply closed.
_POLITE_ENDS: Final[frozenset[DisconnectReason]] = frozenset({"exit", "eof", "shutdown", "timeout"})


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class _Arrival:
    """What a PROXY header said of a connection."""

    peer: str  # the real client (or the balancer itself, for LOCAL and UNKNOWN)
    via: str  # the balancer
    health: bool  # a v2 LOCAL header: the balancer's own connection, a health check
    first: bytes  # what came after the header in the same reads: the echo's first bytes


def _within(stream: trio.SocketStream, networks: Sequence[Network]) -> bool:
    try:
        address = ipaddress.ip_address(stream.socket.getpeername()[0])
    except (OSError, ValueError):
        return False
    return any(address in network for network in networks)


def _bad_header(exc: BadProxyHeader, seen: bytes) -> str:
    if str(exc) == "not a PROXY header":
        return _(
            "it sent {quoted} instead of a PROXY header: is the balancer set to "
            "send-proxy (or send-proxy-v2)?"
        ).format(quoted=quoted(preview(seen), len(seen)))
    return _("a bad PROXY header: {exc}").format(exc=exc)


def _peer_of(stream: trio.abc.Stream) -> str:
    if not isinstance(stream, trio.SocketStream):
        return "(in-memory stream)"
    try:
        name = stream.socket.getpeername()
    except OSError:  # reset before we looked: it has no name any more (ENOTCONN)
        return _("(already gone)")
    if not isinstance(name, tuple):  # a Unix socket's peer (tests, a socketpair)
        return _("(unix socket {name!r})").format(name=name) if name else _("(unix socket)")
    return format_address(name[0], name[1])


@final
class _SocketIO:
    """A socket's bytes moved by non-blocking reads and writes (`nonblocking.RawSocket`).

    `receive_some` and `send_all` wait for readiness and pass through trio's scheduler on
    every call. Here a read or a write is simply tried, and the task waits (`wait_readable`,
    `wait_writable`) only when it would block: a busy connection costs a system call per read
    and per write, plus the one checkpoint per message that the echo loop takes.
    """

    __slots__ = ("_conn", "_fd", "_first", "_idle_timeout", "_raw", "_size", "_unsent")
    reads_without_checkpoint: Final = True  # `read_now` reads without one: the loop takes it

    def __init__(
        self,
        stream: trio.SocketStream,
        conn: Connection,
        size: int,
        idle: float | None,
        first: bytes = b"",
    ) -> None:
        self._raw = RawSocket(stream.socket)  # the stream's own socket, non-blocking
        self._fd = self._raw.fd
        self._conn = conn
        self._size = size
        self._idle_timeout = idle
        self._unsent: bytes | memoryview = b""
        self._first = first  # read before the echo began (after a PROXY header)

    def read_now(self) -> bytes | None:
        """A read if the socket has bytes (or its end: b""), else None, without waiting."""
        if self._first:
            data, self._first = self._first[: self._size], self._first[self._size :]
            return data
        return self._raw.read_now(self._size)

    async def receive(self) -> bytes | None:
        """The next read (b"" at the end), or None after the idle timeout."""
        while True:
            data = self.read_now()
            if data is not None:
                return data
            if self._idle_timeout is None:
                await trio.lowlevel.wait_readable(self._fd)
                continue
            with trio.move_on_after(self._idle_timeout):
                await trio.lowlevel.wait_readable(self._fd)
                continue
            return None

    def send_now(self, data: bytes) -> bool:
        """Write what the socket takes without waiting; True if that was all of it."""
        self._unsent = data
        return self._write()

    async def send_rest(self) -> None:
        """Wait until the rest of the last `send_now` is written (or this is cancelled)."""
        while not self._write():
            await trio.lowlevel.wait_writable(self._fd)

    @property
    def unsent(self) -> int:
        return len(self._unsent)

    def _write(self) -> bool:
        before = len(self._unsent)
        self._unsent = self._raw.write_now(self._unsent)
        self._conn.bytes_out += before - len(self._unsent)
        return not self._unsent


@final
class _StreamIO:
    """The same operations over any other trio stream (in-memory ones, TLS...)."""

    __slots__ = ("_conn", "_first", "_idle_timeout", "_size", "_stream", "_unsent")
    # Every read is a `receive_some`, a checkpoint of its own: the loop need not add one.
    reads_without_checkpoint: Final = False

    def __init__(
        self,
        stream: trio.abc.Stream,
        conn: Connection,
        size: int,
        idle: float | None,
        first: bytes = b"",
    ) -> None:
        self._stream = stream
        self._conn = conn
        self._size = size
        self._idle_timeout = idle
        self._unsent = b""
        self._first = first

    def read_now(self) -> bytes | None:
        if self._first:  # read before the echo began (after a PROXY header)
            data, self._first = self._first[: self._size], self._first[self._size :]
            return data
        return None  # only `receive_some` can tell

    async def receive(self) -> bytes | None:
        if self._idle_timeout is None:
            return bytes(await self._stream.receive_some(self._size))
        with trio.move_on_after(self._idle_timeout):
            return bytes(await self._stream.receive_some(self._size))
        return None

    def send_now(self, data: bytes) -> bool:
        self._unsent = data
        return not data

    async def send_rest(self) -> None:
        await self._stream.send_all(self._unsent)
        self._conn.bytes_out += len(self._unsent)
        self._unsent = b""

    @property
    def unsent(self) -> int:
        return len(self._unsent)


@final
class _TlsIO:
    """The same operations over TLS (`ServerTlsStream`), plaintext in and out; an echo is
    counted as sent once all of its ciphertext is."""

    __slots__ = ("_conn", "_idle_timeout", "_sending", "_size", "_stream")
    reads_without_checkpoint: Final = True  # plaintext OpenSSL already holds: no checkpoint

    def __init__(
        self, stream: ServerTlsStream, conn: Connection, size: int, idle: float | None
    ) -> None:
        self._stream = stream
        self._conn = conn
        self._size = size
        self._idle_timeout = idle
        self._sending = 0

    def read_now(self) -> bytes | None:
        return self._stream.read_now(self._size)

    async def receive(self) -> bytes | None:
        """The next read, after `read_now` found none (b"" at the end), or None after the
        idle timeout."""
        while True:
            if self._idle_timeout is None:
                await self._stream.fill()
            else:
                with trio.move_on_after(self._idle_timeout) as waited:
                    await self._stream.fill()
                if waited.cancelled_caught:
                    return None
            data = self._stream.read_now(self._size)
            if data is not None:
                return data

    def send_now(self, data: bytes) -> bool:
        if self._stream.send_now(data):
            self._conn.bytes_out += len(data)
            return True
        self._sending = len(data)
        return False

    async def send_rest(self) -> None:
        await self._stream.flush()
        self._conn.bytes_out += self._sending
        self._sending = 0

    @property
    def unsent(self) -> int:
        return self._stream.unsent


def _listening(sock: trio.socket.SocketType) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)


async def _open_shared_listeners(host: str, port: int) -> list[trio.SocketListener]:
    """Like `trio.open_tcp_listeners`, with SO_REUSEPORT: other processes (`--workers`) may
    listen on the same port, and the kernel spreads new connections over them all."""
    socks = await bind_all(host, port, socket.SOCK_STREAM, _listening, reuse_port=True)
    for sock in socks:
        sock.listen(LISTEN_BACKLOG)
    return [trio.SocketListener(sock) for sock in socks]


@final
class EchoServer:
    """An RFC 862 echo server with the `exit` command, an event log and graceful shutdown.

    Construct it, then either `await nursery.start(server.run)` (opens the listeners),
    or open them yourself and `await nursery.start(server.serve, listeners)`. Both hand
    this object to `task_status.started`, once every listener is bound. Connections can
    also be driven directly with `handle`, over any half-closeable stream.
    """

    def __init__(
        self,
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        exit_command: bool = True,
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        idle_timeout: float | None = None,
        emit: Emit = ignore,
        data_events: bool = True,
        reuse_port: bool = False,
        tls: tls.ServerTls | None = None,
        tcp: bool = True,
        udp: bool = False,
        udp_rate: float | None = udp_module.DEFAULT_RATE,
        udp_allow_low_ports: bool = False,
        fd_limit: int | None = None,
        inherited: Sequence[socket.socket] = (),
        proxy_protocol: bool = False,
        proxy_timeout: float = DEFAULT_PROXY_TIMEOUT,
        proxy_trusted: Sequence[Network] | None = None,
        drain_timeout: float = 0.0,
        stop_signals: Sequence[str] = (),
    ) -> None:
        if chunk_size < 1:
            raise ValueError(_("chunk_size must be at least 1"))
        if shutdown_timeout < 0:
            raise ValueError(_("shutdown_timeout must not be negative"))
        if max_connections < 1:
            raise ValueError(_("max_connections must be at least 1"))
        if idle_timeout is not None and idle_timeout <= 0:
            raise ValueError(_("idle_timeout must be positive (or None, for none)"))
        if not (tcp or udp):
            raise ValueError(_("serve TCP, UDP or both"))
        self.host = host
        self.port = port
        self.chunk_size = chunk_size
        self.exit_command = exit_command
        self.shutdown_timeout = shutdown_timeout
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self._emit = emit
        self._data_events = data_events
        self.reuse_port = reuse_port
        self.tls = tls
        self.tcp = tcp
        self.udp = udp
        self.udp_rate = udp_rate
        self.udp_allow_low_ports = udp_allow_low_ports
        self.fd_limit = fd_limit
        self.inherited = inherited  # sockets handed over (systemd socket activation)
        self.proxy_protocol = proxy_protocol
        self.proxy_timeout = proxy_timeout
        self.proxy_trusted = proxy_trusted
        self.drain_timeout = drain_timeout
        self.stop_signals = tuple(stop_signals)  # what stops it, to say so (main handles them)
        self.udp_endpoints: list[udp_module.UdpEcho] = []
        self.udp_addresses: list[tuple[str, int]] = []
        self.addresses: list[tuple[str, int]] = []
        self._ids = itertools.count(1)
        self._life = Lifecycle(
            shutdown_timeout=shutdown_timeout, drain_timeout=drain_timeout, emit=emit
        )
        self._served = 0
        self._bytes_in = 0
        self._bytes_out = 0

    # ---- lifecycle -----------------------------------------------------------------------

    async def open(self) -> list[trio.SocketListener]:
        """Announce the settings and bind; raises OSError (address in use, bad host...)."""
        self._emit(
            ServerStarting(
                version=__version__,
                pid=os.getpid(),
                host=self.host,
                port=self.port,
                chunk_size=self.chunk_size,
                exit_command=self.exit_command,
                shutdown_timeout=self.shutdown_timeout,
                max_connections=self.max_connections,
                idle_timeout=self.idle_timeout,
                tls=None if self.tls is None else self.tls.certificate,
                fd_limit=self.fd_limit,
                activated=bool(self.inherited),
                system=capabilities.system(),
                stop_signals=self.stop_signals,
            )
        )
        if self.fd_limit is not None and self.max_connections > connections_for(self.fd_limit):
            room = connections_for(self.fd_limit)
            self._emit(LimitWarning(self.max_connections, self.fd_limit, room))
        if self.inherited:
            return self._adopt(self.inherited)
        listeners: list[trio.SocketListener] = []
        if self.tcp and self.reuse_port:
            listeners = await _open_shared_listeners(self.host, self.port)
        elif self.tcp:
            listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        if self.udp:
            # UDP on the same port as TCP (as inetd's echo): the one TCP chose, for port 0.
            port = listeners[0].socket.getsockname()[1] if listeners else self.port
            try:
                socks = await udp_module.UdpEcho.bind(self.host, port, self.reuse_port)
            except BaseException:
                for listener in listeners:
                    listener.socket.close()
                raise
            self._serve_udp(socks)
        return listeners

    def _serve_udp(self, socks: Sequence[trio.socket.SocketType]) -> None:
        self.udp_endpoints = [
            udp_module.UdpEcho(
                sock,
                emit=self._emit,
                data_events=self._data_events,
                rate=self.udp_rate,
                allow_low_ports=self.udp_allow_low_ports,
            )
            for sock in socks
        ]

    def _adopt(self, socks: Sequence[socket.socket]) -> list[trio.SocketListener]:
        """Serve sockets bound by someone else (systemd): streams as TCP listeners,
        datagram sockets as UDP endpoints, whatever --udp and --no-tcp say."""
        listeners, datagrams = [], []
        for sock in socks:
            adopted = trio.socket.from_stdlib_socket(sock)
            if sock.type == socket.SOCK_DGRAM:
                udp_module.ask_destination(adopted)
                datagrams.append(adopted)
            else:
                listeners.append(trio.SocketListener(adopted))
        self._serve_udp(datagrams)
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
        started = trio.current_time()
        activated = bool(self.inherited)
        for listener in listeners:
            host, port = listener.socket.getsockname()[:2]
            self.addresses.append((host, port))
            pin = None if self.tls is None else self.tls.fingerprint
            reach = reachability(host)
            self._emit(Listening(host, port, reach, tls_fingerprint=pin, activated=activated))
        for endpoint in self.udp_endpoints:
            host, port = endpoint.sock.getsockname()[:2]
            self.udp_addresses.append((host, port))
            reach = reachability(host)
            self._emit(Listening(host, port, reach, transport="udp", activated=activated))
        with self._life.connections:
            async with trio.open_nursery() as connections:
                with self._life.accepting:
                    # Like trio.serve_tcp (open_tcp_listeners + serve_listeners), but binding
                    # first (in `open`) keeps bind errors plain OSErrors, out of nurseries,
                    # and our accept loop reports running out of descriptors as events.
                    async with trio.open_nursery() as accepting:
                        for listener in listeners:
                            accepting.start_soon(self._accept, listener, connections)
                        for endpoint in self.udp_endpoints:  # datagrams: no sessions to end
                            accepting.start_soon(endpoint.run)
                        accepting.start_soon(self._life.run_drain)
                        task_status.started(self)
        udp = [endpoint.counts for endpoint in self.udp_endpoints]
        self._emit(
            Stopped(
                connections=self._served,
                bytes_in=self._bytes_in,
                bytes_out=self._bytes_out,
                uptime=trio.current_time() - started,
                datagrams_in=sum(c.datagrams_in for c in udp),
                datagrams_out=sum(c.datagrams_out for c in udp),
                udp_bytes_in=sum(c.bytes_in for c in udp),
                udp_bytes_out=sum(c.bytes_out for c in udp),
            )
        )

    def stop(self, reason: str = "request") -> None:
        """Stop accepting, finish echoing what was read, then end. Safe to call again.

        With `drain_timeout`, first drain: for that long health checks fail (PROXY LOCAL
        connections are closed at once) and everyone is still served, so that a load
        balancer marks the server down and sends no one new before it stops accepting."""
        self._life.stop(reason)

    def abort(self) -> None:
        """Stop at once: cancel every connection, even mid-echo."""
        self._life.abort()

    @property
    def active(self) -> int:
        return len(self._life.active)

    # ---- one connection ------------------------------------------------------------------

    async def _accept(self, listener: trio.SocketListener, connections: trio.Nursery) -> None:
        async with listener:
            paused_at: float | None = None
            failures = 0
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    if "no_resources" not in cli.error_kinds(exc):
                        raise
                    if paused_at is None:
                        paused_at, failures = trio.current_time(), 0
                        code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
                        error = f"{code} ({cli.os_error_text(exc)})"
                        self._emit(AcceptPaused(error=error, active=len(self._life.active)))
                    failures += 1
                    await trio.sleep(ACCEPT_RETRY_SECONDS)
                    continue
                if paused_at is not None:
                    paused = trio.current_time() - paused_at
                    self._emit(AcceptResumed(failures=failures, paused=paused))
                    paused_at = None
                connections.start_soon(self._serve_accepted, stream)

    async def _serve_accepted(self, stream: trio.SocketStream) -> None:
        """A connection's task. Nothing may escape it: that would end the server."""
        if len(self._life.active) + len(self._life.greeting) >= self.max_connections:
            await self._reject(stream, "max_connections")
            return
        arrival = None
        if self.proxy_protocol:
            arrival = await self._read_proxy_header(stream)
            if arrival is None:
                return
            if arrival.health and self._life.draining:
                await self._reject(stream, "draining")
                return
        await self.handle(stream, arrival)

    async def _reject(
        self, stream: trio.abc.HalfCloseableStream, reason: RejectReason, detail: str = ""
    ) -> None:
        active, limit = len(self._life.active), self.max_connections
        self._emit(Rejected(_peer_of(stream), reason, active, limit, detail))
        await trio.aclose_forcefully(stream)

    async def _read_proxy_header(self, stream: trio.SocketStream) -> _Arrival | None:
        """The PROXY layer: the header a load balancer sends first, read within
        `proxy_timeout`; the real client's address, or None once rejected (and closed)."""
        balancer = _peer_of(stream)
        if self.proxy_trusted is not None and not _within(stream, self.proxy_trusted):
            await self._reject(stream, "untrusted_proxy")
            return None
        reader = ProxyHeaderReader()
        seen = b""
        header = None
        with trio.move_on_after(self.proxy_timeout) as waited:
            self._life.greeting.add(waited)
            try:
                while header is None:
                    data = bytes(await stream.receive_some(4096))
                    seen = seen or data
                    if not data:
                        raise BadProxyHeader(_("the connection closed before a whole header"))
                    header = reader.feed(data)
            except BadProxyHeader as exc:
                await self._reject(stream, "bad_proxy_header", _bad_header(exc, seen))
                return None
            except trio.BrokenResourceError:
                detail = _("the connection was reset before a whole PROXY header")
                await self._reject(stream, "bad_proxy_header", detail)
                return None
            finally:
                self._life.greeting.discard(waited)
        if header is None:
            if self._life.stopping:
                detail = _("the server is stopping")
            else:
                detail = _("no PROXY header within {seconds:g} s (--proxy-timeout)").format(
                    seconds=self.proxy_timeout
                )
                if seen:
                    detail += _(": it sent only {quoted}").format(
                        quoted=quoted(preview(seen), len(seen))
                    )
            await self._reject(stream, "bad_proxy_header", detail)
            return None
        if header.local or not isinstance(header.source, tuple):  # LOCAL, UNKNOWN, UNSPEC
            return _Arrival(balancer, balancer, header.local, reader.rest)
        return _Arrival(format_address(*header.source), balancer, False, reader.rest)

    async def handle(
        self, stream: trio.abc.HalfCloseableStream, arrival: _Arrival | None = None
    ) -> DisconnectReason:
        """Serve one connection from start to end, and return why it ended.

        Its layers run in turn inside the connection's `reading` scope: TLS (with `tls`),
        then the echo, which sees a plain stream either way. `arrival` is what a PROXY
        header said (the real client, and the bytes read after it)."""
        conn = Connection(next(self._ids))
        self._life.active[conn.id] = conn
        self._served += 1
        began = trio.current_time()
        reason: DisconnectReason = "shutdown"  # what it is if cancelled from outside
        detail = ""
        echoed: trio.abc.Stream | None = None  # the stream the echo ran over, once it could
        try:
            if self._life.stopping:
                self._life.stop_connection(conn)
            first = b"" if arrival is None else arrival.first
            if arrival is None:
                self._emit(Connected(conn.id, _peer_of(stream), len(self._life.active)))
            else:
                self._emit(
                    Connected(
                        conn.id, arrival.peer, len(self._life.active), arrival.via, arrival.health
                    )
                )
            with conn.reading:
                if self.tls is None:
                    echoed = stream
                else:
                    echoed, first = await self._secure(stream, conn, first), b""
                reason = await self._echo_until_done(echoed, conn, first)
            if reason in ("exit", "shutdown") and echoed is stream:
                await self._linger(stream)
        except tls.TlsFailed as exc:
            reason, detail = "tls_error", str(exc)
        except trio.BrokenResourceError as exc:
            reason, detail = "reset", cli.describe(exc)
        except Exception as exc:  # one client's trouble must never reach the server
            reason, detail = "error", f"{type(exc).__name__}: {cli.describe(exc)}"
        finally:
            del self._life.active[conn.id]
            self._bytes_in += conn.bytes_in
            self._bytes_out += conn.bytes_out
            with trio.CancelScope(shield=True):  # even when cancelled: close, then report
                if isinstance(echoed, ServerTlsStream) and reason in _POLITE_ENDS:
                    with trio.move_on_after(2 * LINGER_SECONDS):
                        await echoed.close_politely(LINGER_SECONDS)
                await trio.aclose_forcefully(stream)
            self._emit(
                Disconnected(
                    conn=conn.id,
                    reason=reason,
                    bytes_in=conn.bytes_in,
                    bytes_out=conn.bytes_out,
                    duration=trio.current_time() - began,
                    detail=detail,
                )
            )
        return reason

    async def _secure(
        self, stream: trio.abc.HalfCloseableStream, conn: Connection, first: bytes = b""
    ) -> ServerTlsStream:
        """The TLS layer: a handshake (bounded by its own timeout), reported as an event.
        `first`: bytes already read from the stream (after a PROXY header)."""
        assert self.tls is not None
        secured, established = await tls.server_handshake(stream, self.tls, first)
        self._emit(
            TlsEstablished(
                conn=conn.id,
                version=established.version,
                cipher=established.cipher,
                sni=established.sni,
                client_cert=established.client_cert,
            )
        )
        return secured

    async def _echo_until_done(
        self, stream: trio.abc.Stream, conn: Connection, first: bytes = b""
    ) -> DisconnectReason:
        """Echo until `exit`, the end of input or the idle timeout; `stop` cancels it.
        `first`: bytes already read from the stream, echoed first."""
        io: _SocketIO | _TlsIO | _StreamIO
        if isinstance(stream, trio.SocketStream):
            io = _SocketIO(stream, conn, self.chunk_size, self.idle_timeout, first)
        elif isinstance(stream, ServerTlsStream):
            io = _TlsIO(stream, conn, self.chunk_size, self.idle_timeout)
        else:
            io = _StreamIO(stream, conn, self.chunk_size, self.idle_timeout, first)
        detector = ExitDetector() if self.exit_command else None
        streak = 0  # large reads in a row that filled the buffer
        full = self.chunk_size if self.chunk_size >= LARGE_READ else -1  # -1: never read on
        while True:
            # One checkpoint per message. That is where a stop takes effect: between
            # echoes, never in the middle of one. It is fair to the other connections.
            # And it makes this fast: while the other tasks run, the client's next message
            # arrives, so the read finds it at once instead of failing and waiting in epoll
            # (measured: twice the messages per second at 10 connections).
            # But a large read that filled the buffer is most likely the middle of a
            # message, whose rest is already here: read on at once, up to STREAK reads
            # (measured: 100 KiB messages, 64 KiB reads, 100 connections: 1.3x MiB/s).
            if (streak == 0 or streak >= STREAK) and io.reads_without_checkpoint:
                streak = 0
                await trio.lowlevel.checkpoint()
            data = io.read_now()
            if data is not None and len(data) == full:
                streak += 1
            else:
                streak = 0
            if data is None:
                data = await io.receive()
            if data is None:
                return "timeout"
            if not data:
                if detector is not None and detector.end_of_input():
                    return "exit"
                return "eof"
            conn.bytes_in += len(data)
            if self._data_events:
                self._emit(Received(conn=conn.id, bytes=len(data), preview=preview(data)))
            cut = None if detector is None else detector.feed(data)
            if cut is not None:
                data = data[:cut]
            if (io.send_now(data) or await self._send_rest(io, conn)) and self._data_events:
                self._emit(Sent(conn=conn.id, bytes=len(data)))
            if cut is not None:
                return "exit"

    async def _send_rest(self, io: _SocketIO | _TlsIO | _StreamIO, conn: Connection) -> bool:
        """Finish an echo the socket could not take at once; False if the stop cut it off."""
        # Shielded from the `reading` cancellation, so that bytes already read still go back
        # during a shutdown; bounded by the shutdown deadline instead.
        with trio.CancelScope(shield=True, deadline=self._life.echo_deadline) as conn.echoing:
            await io.send_rest()
        conn.echoing = None
        return not io.unsent

    async def _linger(self, stream: trio.abc.HalfCloseableStream) -> None:
        await stream.send_eof()
        with trio.move_on_after(LINGER_SECONDS):
            while await stream.receive_some(self.chunk_size):
                pass


def connections_for(fd_limit: int) -> int:
    """How many clients a descriptor limit has room for, after the reserve."""
    return max(1, fd_limit - min(FD_RESERVE, fd_limit // 4))


async def serve(
    *,
    task_status: trio.TaskStatus[EchoServer] = trio.TASK_STATUS_IGNORED,
    **options: object,
) -> None:
    """Run an `EchoServer` built from `options` (see its constructor) until stopped.

    ``server = await nursery.start(partial(trio_echo.serve, port=0))`` returns the running
    server, already listening: ``server.addresses``, ``server.stop()``.
    """
    server = EchoServer(**options)  # type: ignore[arg-type]
    await server.run(task_status=task_status)


# ---- the command line ----------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = cli.parser(
        "trio-echo-server",
        N_(
            "A TCP echo server: every byte a client sends comes back, until it sends the line "
            "`exit` or closes. Events are explained on stderr."
        ),
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=N_(
            "address to listen on; 0.0.0.0 (IPv4) or :: (IPv6 and IPv4) makes the server "
            "reachable from other machines (default: %(default)s, this machine only)"
        ),
    )
    parser.add_argument(
        "--port",
        type=cli.port_number,
        default=DEFAULT_PORT,
        help=N_(
            "TCP port; 0 picks a free one, shown in the `listening` event (default: %(default)s)"
        ),
    )
    parser.add_argument(
        "--chunk-size",
        type=cli.positive_int,
        default=DEFAULT_CHUNK_SIZE,
        help=N_("bytes per read; each read is echoed at once (default: %(default)s)"),
    )
    parser.add_argument(
        "--no-exit-command",
        dest="exit_command",
        action="store_false",
        help=N_("treat the line `exit` as ordinary data (a plain RFC 862 echo)"),
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=cli.non_negative_float,
        default=DEFAULT_SHUTDOWN_TIMEOUT,
        help=N_(
            "on Ctrl-C or SIGTERM, seconds to finish echoing what was already received "
            "(default: %(default)s)"
        ),
    )
    parser.add_argument(
        "--max-connections",
        type=cli.positive_int,
        default=None,
        help=N_(
            "clients served at once; more are accepted and closed at once (a `rejected` "
            "event). Default: what the descriptor limit has room for, once the soft limit is "
            "raised to the hard one, less a reserve"
        ),
    )
    parser.add_argument(
        "--idle-timeout",
        type=cli.positive_float,
        default=None,
        help=N_("close a client that sends nothing for this many seconds (default: never)"),
    )
    parser.add_argument(
        "--workers",
        type=cli.positive_int,
        default=1,
        help=N_(
            "server processes sharing the port (SO_REUSEPORT), one per core at most; "
            "each event line names its worker (default: %(default)s)"
        ),
    )
    cli.add_server_tls_options(parser)
    group = parser.add_argument_group(N_("PROXY protocol (behind a load balancer)"))
    group.add_argument(
        "--proxy-protocol",
        action="store_true",
        help=N_(
            "every connection begins with a PROXY header (version 1 or 2, as HAProxy's "
            "send-proxy sends it): the `connected` event names the real client, `via` the balancer"
        ),
    )
    group.add_argument(
        "--proxy-timeout",
        type=cli.positive_float,
        default=DEFAULT_PROXY_TIMEOUT,
        help=N_("seconds a connection has to send its whole PROXY header"),
    )
    group.add_argument(
        "--drain-timeout",
        type=cli.non_negative_float,
        default=0.0,
        help=N_(
            "on Ctrl-C or SIGTERM, first drain for this many seconds: health checks (PROXY "
            "LOCAL) fail so that the balancer sends no new clients, and everyone is still served; "
            "then stop as usual (default: no drain)"
        ),
    )
    group.add_argument(
        "--proxy-trusted",
        metavar="CIDR[,CIDR...]",
        type=_networks,
        help=N_(
            "only peers in these networks may send a PROXY header (default: any, as "
            "HAProxy's accept-proxy); set it when clients can also reach the server directly, or "
            "any of them can claim any address"
        ),
    )
    group = parser.add_argument_group(N_("UDP (RFC 862's datagram echo)"))
    group.add_argument(
        "--udp",
        action="store_true",
        help=N_("also answer UDP datagrams on the same host and port, each with one datagram"),
    )
    group.add_argument(
        "--no-tcp", dest="tcp", action="store_false", help=N_("with --udp: serve UDP alone")
    )
    group.add_argument(
        "--udp-rate",
        type=cli.non_negative_float,
        default=udp_module.DEFAULT_RATE,
        help=N_(
            "datagrams per second answered per source address, with a burst of one "
            "second's worth; 0 for no limit"
        ),
    )
    group.add_argument(
        "--udp-allow-low-ports",
        action="store_true",
        help=N_(
            "answer source ports below 1024 too (off: the loop guard, so that two echo-like "
            "services can never bounce datagrams forever)"
        ),
    )
    # Set by the supervisor for each worker it starts; not for people to type.
    parser.add_argument("--worker-id", type=cli.positive_int, help=argparse.SUPPRESS)
    cli.add_log_options(
        parser, quiet_help=N_("leave out the per-data events `received` and `sent`")
    )
    return parser


def _stop(server: EchoServer, reason: str) -> None:
    systemd.notify("STOPPING=1")
    server.stop(reason)


def _networks(text: str) -> list[Network]:
    try:
        return [ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",")]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_networks.__name__ = "networks"


async def _stop_on_signals(signals: AsyncIterator[int], server: EchoServer) -> None:
    first = True
    async for signum in signals:
        if first:
            _stop(server, cli.signal_reason(signum))
            first = False
        else:
            server.abort()


async def _report_status(server: EchoServer) -> None:
    """systemd's status line (`systemctl status`): the clients connected, when it changes."""
    said = None
    while True:
        if server.active != said:
            said = server.active
            systemd.notify("STATUS=" + _("{clients} connected").format(clients=count_clients(said)))
        await trio.sleep(STATUS_SECONDS)  # a status line's pace, not a synchronisation


async def _stop_when_supervisor_goes(server: EchoServer) -> None:
    """A worker's stdin is a pipe from its supervisor: its end means the supervisor is gone
    (even killed with SIGKILL), and a worker must not outlive it."""
    while True:
        await trio.lowlevel.wait_readable(sys.stdin.fileno())
        if not os.read(sys.stdin.fileno(), 4096):
            _stop(server, "the end of its supervisor")
            return


async def _run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    if args.workers > 1:
        if not (args.tls and args.tls_cert is None):
            return await workers.supervise(args, argv)
        # One ephemeral certificate for all the workers: one fingerprint to pin.
        with tempfile.TemporaryDirectory(prefix="trio-echo-tls-") as directory:
            cert, key = tls.ephemeral_certificate(tls.ephemeral_names(args.host))
            files = ["--tls-cert", tls.write_private(directory, "cert.pem", cert)]
            files += ["--tls-key", tls.write_private(directory, "key.pem", key)]
            return await workers.supervise(args, [*argv, *files])
    async with cli.open_log(args, worker=args.worker_id) as log:
        await _serve(args, log.emit)
    return 0


def _server_tls(args: argparse.Namespace) -> tls.ServerTls | None:
    if not args.tls:
        return None
    try:
        return tls.server_tls(
            cert_file=args.tls_cert,
            key_file=args.tls_key,
            client_ca=args.tls_client_ca,
            host=args.host,
            handshake_timeout=args.tls_handshake_timeout,
        )
    except tls.TlsFailed as exc:
        raise cli.Fatal(str(exc)) from None


async def _serve(args: argparse.Namespace, emit: Emit) -> None:
    fd_limit = capabilities.raise_descriptor_limit()
    stop_signals = capabilities.stop_signals()
    default_connections = (
        capabilities.WINDOWS_CONNECTIONS if fd_limit is None else connections_for(fd_limit)
    )
    server = EchoServer(
        host=args.host,
        port=args.port,
        chunk_size=args.chunk_size,
        exit_command=args.exit_command,
        shutdown_timeout=args.shutdown_timeout,
        max_connections=args.max_connections or default_connections,
        fd_limit=fd_limit,
        idle_timeout=args.idle_timeout,
        emit=emit,
        data_events=not args.quiet,
        reuse_port=args.worker_id is not None,
        tls=_server_tls(args),
        tcp=args.tcp,
        udp=args.udp,
        udp_rate=args.udp_rate or None,
        udp_allow_low_ports=args.udp_allow_low_ports,
        inherited=systemd.listen_sockets(),
        proxy_protocol=args.proxy_protocol,
        proxy_timeout=args.proxy_timeout,
        proxy_trusted=args.proxy_trusted,
        drain_timeout=args.drain_timeout,
        stop_signals=[known.code for known in stop_signals],
    )
    with trio.open_signal_receiver(*[known.signum for known in stop_signals]) as signals:
        try:
            listeners = await server.open()
        except OSError as exc:
            where = format_address(args.host, args.port)
            raise cli.Fatal(
                _("cannot listen on {where}: {error}").format(
                    where=where, error=cli.os_error_text(exc)
                )
            ) from None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_on_signals, signals, server)
            if args.worker_id is not None:
                nursery.start_soon(_stop_when_supervisor_goes, server)
            async with trio.open_nursery() as serving:
                await serving.start(server.serve, listeners)
                if systemd.notify("READY=1"):
                    nursery.start_soon(_report_status, server)
            nursery.cancel_scope.cancel()  # the watchers have no reason to outlive it


def main(argv: Sequence[str] | None = None) -> None:
    i18n.setup(argv)  # before the parser: its help is in the chosen language
    argv = sys.argv[1:] if argv is None else argv
    parser = _parser()
    args = parser.parse_args(argv)
    cli.check_tls_options(parser, args)
    if not args.tcp and not args.udp:
        parser.error(_("--no-tcp needs --udp (a server must serve something)"))
    if args.tls and not args.tcp:
        parser.error(_("--tls is for TCP: it cannot go with --no-tcp"))
    if args.proxy_trusted is not None and not args.proxy_protocol:
        parser.error(_("--proxy-trusted needs --proxy-protocol"))
    if args.workers > 1 and not capabilities.balanced_reuse_port():
        parser.error(
            _(
                "--workers {n} needs a kernel that spreads the connections of one port over "
                "processes (SO_REUSEPORT as on Linux), which {platform} does not: run one "
                "server (--workers 1), or one per port"
            ).format(n=args.workers, platform=capabilities.platform_name())
        )
    sys.exit(cli.run_async(partial(_run, args, argv), "trio-echo-server", "unexpected error"))


if __name__ == "__main__":
    main()
