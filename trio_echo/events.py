"""The one vocabulary of events, and its two renderings: human text and JSON lines.

Every event is a small slotted dataclass, made once and never changed (a value; mypy holds
code to that). Its class says the JSON name and the text label;
its `explain` method says, in a sentence a student understands, what happened. Its fields
are the JSON fields. Nothing else anywhere decides how an event looks.

Client data reaches the log only through `preview`, which escapes everything that is not
plainly printable, so that no client can write terminal escapes or fake lines into a log.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar, Final, Literal, TypeVar, dataclass_transform

from trio_echo.i18n import N_, _, ngettext

PREVIEW_BYTES: Final = 32
LABEL_WIDTH: Final = 12

LogFormat = Literal["text", "json"]
LOG_FORMATS: Final[tuple[LogFormat, ...]] = ("text", "json")

RejectReason = Literal["max_connections", "bad_proxy_header", "untrusted_proxy", "draining"]
DisconnectReason = Literal["exit", "eof", "reset", "shutdown", "timeout", "tls_error", "error"]
ClientEndReason = Literal[
    "exit",
    "eof",
    "no_exit_reply",
    "no_close",
    "echo_mismatch",
    "stalled",
    "server_closed",
    "reset",
    "tls_error",
    "error",
]

_ESCAPES: Final = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", '"': '\\"'}
# Printable ASCII and the characters with a short escape: bytes made only of these (most
# text) are previewed by a few `str.replace` calls instead of the loop over characters.
_SIMPLE: Final = bytes(range(0x20, 0x7F)) + "".join(_ESCAPES).encode()


def _whole_characters(head: bytes | bytearray) -> bytes | bytearray:
    """`head` without a UTF-8 character that the cut at the preview's limit split (Cyrillic
    takes two bytes a letter: such a cut would otherwise show as a `\\xd0` escape)."""
    for back in range(1, min(4, len(head)) + 1):
        byte = head[-back]
        if byte < 0x80:
            return head  # ASCII: nothing was split
        if byte >= 0xC0:  # the lead byte of the last character: is it whole?
            if not 0xC2 <= byte <= 0xF4:
                return head  # not UTF-8 at all: escaped as it is
            needed = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return head if back >= needed else head[:-back]
    return head


def preview(data: bytes | bytearray, limit: int = PREVIEW_BYTES) -> str:
    """A short, escaped rendering of client bytes, safe for any log line.

    Printable text (any script) stays readable; control characters, escape sequences,
    invisible formatting characters and invalid UTF-8 become backslash escapes.
    """
    head = data[:limit]
    if not head.translate(None, _SIMPLE):
        text = head.decode("ascii")
        for char, escape in _ESCAPES.items():  # the backslash first: it is first in _ESCAPES
            text = text.replace(char, escape)
        return text
    if len(data) > limit:
        head = _whole_characters(head)
    # surrogateescape maps each invalid byte to one lone surrogate, U+DC80..U+DCFF.
    text = head.decode("utf-8", errors="surrogateescape")
    out = []
    for char in text:
        code = ord(char)
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        else:
            out.append(f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)


def quoted(preview_text: str, size: int) -> str:
    """A preview in quotes for a text line, marked when it was cut short."""
    return f'"{preview_text}"' + ("..." if size > PREVIEW_BYTES else "")


def count_bytes(count: int) -> str:
    return ngettext("{n} byte", "{n} bytes", count).format(n=count)


def count_clients(count: int) -> str:
    return ngettext("{n} client", "{n} clients", count).format(n=count)


def count_datagrams(count: int) -> str:
    return ngettext("{n} datagram", "{n} datagrams", count).format(n=count)


def _with_detail(why: str, detail: str) -> str:
    return f"{why} ({detail})" if detail else why


def format_address(host: str, port: int) -> str:
    """host:port, with IPv6 hosts in brackets as in URLs."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


_E = TypeVar("_E")


@dataclass_transform(frozen_default=True, eq_default=True)
def event(cls: type[_E]) -> type[_E]:
    """An event class: a dataclass with slots whose `__eq__`, `__hash__` and `__repr__` are
    `Event`'s, written once. `dataclass` would compile each of these for every class at every
    start, and for `frozen=True` a `__setattr__` and a `__delattr__` too: two thirds of the
    events' import time, which every run of the client pays (measured with `python -X
    importtime`). Not frozen at run time either: a frozen `__init__` (or a write-once
    `__setattr__`) costs every event, two per echo with data events on (measured: 13% of
    the logged server's messages per second). mypy treats them as frozen. A class without a
    docstring gets its name as one: `dataclass` would otherwise work out its signature with
    `inspect`."""
    cls.__doc__ = cls.__doc__ or cls.__name__
    return dataclass(slots=True, eq=False, repr=False, match_args=False)(cls)


@event
class Event:
    """Base of all events. Subclasses set `name` (the JSON `event`) and `label` (text)."""

    name: ClassVar[str]
    label: ClassVar[str]
    # One per read or write (`--quiet` leaves these out; a log that falls behind, too).
    data: ClassVar[bool] = False

    def explain(self) -> str:
        raise NotImplementedError

    def fields(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__dataclass_fields__)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Event)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash((type(self), self._values()))

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in self.fields().items())
        return f"{type(self).__name__}({shown})"


# ---- server events ----------------------------------------------------------------------


@event
class ServerStarting(Event):
    name = "server_starting"
    label = N_("START")
    version: str
    pid: int
    host: str
    port: int
    chunk_size: int
    exit_command: bool
    shutdown_timeout: float
    max_connections: int
    idle_timeout: float | None
    tls: str | None = None  # where the certificate comes from, when the port speaks TLS
    fd_limit: int | None = None  # the descriptors this process may open (RLIMIT_NOFILE)
    activated: bool = False  # serving sockets handed over by systemd, not host and port
    # The kernel's name for itself ("linux", "darwin", "windows"), and the signals that stop
    # this server here ("SIGINT", "SIGTERM", "SIGBREAK"), if it handles any.
    system: str = ""
    stop_signals: tuple[str, ...] = ()

    def explain(self) -> str:
        command = (
            _("on (a line `exit` ends a session)") if self.exit_command else _("off (plain echo)")
        )
        idle = _("off") if self.idle_timeout is None else _("{s:g} s").format(s=self.idle_timeout)
        source = _("ephemeral self-signed") if self.tls == "ephemeral self-signed" else self.tls
        tls = "" if source is None else _(" over TLS (certificate: {path})").format(path=source)
        if self.fd_limit is not None:
            fds = _(" (descriptor limit {n:,})").format(n=self.fd_limit)
        elif self.system == "windows":
            fds = _(" (sockets have no descriptor limit on Windows)")
        else:
            fds = ""
        where = format_address(self.host, self.port)
        if self.activated:
            where = _("the sockets systemd handed over")
        stops = ""
        if self.stop_signals:
            keys = [_STOP_KEYS.get(code, code) for code in self.stop_signals]
            stops = _("; {keys} stops it").format(keys=_(" or ").join(keys))
        return _(
            "trio-echo {version} starting (pid {pid}) on {where}{tls}: reads of up to {chunk}, "
            "exit command {command}, at most {clients} at once{fds}, idle timeout {idle}, "
            "shutdown timeout {shutdown:g} s"
        ).format(
            version=self.version, pid=self.pid, where=where, tls=tls,
            chunk=count_bytes(self.chunk_size), command=command,
            clients=count_clients(self.max_connections), fds=fds, idle=idle,
            shutdown=self.shutdown_timeout,
        ) + stops  # fmt: skip


# How a person sends each stop signal, where that differs from its name (the keys are named
# the same in every language).
_STOP_KEYS: Final = {"SIGINT": "Ctrl-C", "SIGBREAK": "Ctrl-Break"}


@event
class LimitWarning(Event):
    name = "limit_warning"
    label = N_("WARNING")
    max_connections: int
    fd_limit: int
    room: int

    def explain(self) -> str:
        return _(
            "--max-connections {max:,} is more than the descriptor limit ({limit:,}) has room "
            "for (about {room:,} clients): past that, accepting pauses (EMFILE) instead of "
            "turning clients away; raise the hard limit (ulimit -Hn, LimitNOFILE=) or lower "
            "--max-connections"
        ).format(max=self.max_connections, limit=self.fd_limit, room=self.room)


def reachability(host: str) -> str:
    """How a listening address can be reached, in words."""
    if host in ("0.0.0.0", "::"):
        return _("reachable from other machines at any address of this machine")
    if host.startswith("127.") or host == "::1":
        return _(
            "from this machine only (loopback); start with --host 0.0.0.0 or --host :: "
            "to be reachable from other machines"
        )
    return _("reachable from other machines at {host}").format(host=host)


@event
class Listening(Event):
    name = "listening"
    label = N_("LISTEN")
    host: str
    port: int
    reach: str
    tls_fingerprint: str | None = None  # the certificate's, when the port speaks TLS
    transport: Literal["tcp", "udp"] = "tcp"
    activated: bool = False  # the socket was handed over by systemd, not bound here

    def explain(self) -> str:
        local = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        command = f"trio-echo-client --host {local} --port {self.port}"
        where = format_address(self.host, self.port)
        if self.activated:
            where += _(" (a socket handed over by systemd)")
        if self.transport == "udp":
            return _("answering UDP datagrams on {where}: {reach}. Try: {command} --udp").format(
                where=where, reach=self.reach, command=command
            )
        if self.tls_fingerprint is None:
            return _("listening on {where}: {reach}. Try: {command}").format(
                where=where, reach=self.reach, command=command
            )
        return _(
            "listening on {where} with TLS: {reach}. The certificate's fingerprint is "
            "{fingerprint}. Try: {command} --tls --tls-fingerprint {fingerprint}"
        ).format(where=where, reach=self.reach, fingerprint=self.tls_fingerprint, command=command)


@event
class Connected(Event):
    name = "connected"
    label = N_("CONNECT")
    conn: int
    peer: str
    active: int
    via: str | None = None  # the load balancer's address, when a PROXY header named the peer
    health_check: bool = False  # a PROXY v2 LOCAL header: the balancer's own connection

    def explain(self) -> str:
        active = ngettext("{n} client now connected", "{n} clients now connected", self.active)
        active = active.format(n=self.active)
        if self.health_check:
            return _(
                "client #{conn}: a health check from the load balancer at {peer} (PROXY LOCAL) "
                "({active})"
            ).format(conn=self.conn, peer=self.peer, active=active)
        via = "" if self.via is None else _(" via the load balancer at {via}").format(via=self.via)
        return _("client #{conn} connected from {peer}{via} ({active})").format(
            conn=self.conn, peer=self.peer, via=via, active=active
        )


@event
class TlsEstablished(Event):
    name = "tls_established"
    label = N_("TLS")
    conn: int
    version: str
    cipher: str
    sni: str | None
    client_cert: str | None

    def explain(self) -> str:
        sni = (
            _("no server name (SNI)")
            if self.sni is None
            else _("server name {name!r}").format(name=self.sni)
        )
        who = (
            _("no client certificate")
            if self.client_cert is None
            else _("client certificate {subject}").format(subject=self.client_cert)
        )
        return _("client #{conn} secured the connection: {version}, {cipher}, {sni}, {who}").format(
            conn=self.conn, version=self.version, cipher=self.cipher, sni=sni, who=who
        )


@event
class Rejected(Event):
    name = "rejected"
    label = N_("REJECT")
    peer: str
    reason: RejectReason
    active: int
    limit: int
    detail: str = ""

    def explain(self) -> str:
        if self.reason == "draining":
            return _(
                "failed a health check from {peer} on purpose: the server is draining, so that "
                "the load balancer sends it no new clients"
            ).format(peer=self.peer)
        if self.reason == "bad_proxy_header":
            return _("turned away a connection from {peer}: {detail}").format(
                peer=self.peer, detail=self.detail
            )
        if self.reason == "untrusted_proxy":
            return _(
                "turned away a connection from {peer}: it may not send a PROXY header (it is not "
                "in --proxy-trusted)"
            ).format(peer=self.peer)
        return _(
            "turned away a client from {peer}: {clients} connected already, the limit "
            "(--max-connections) is {limit}; it was accepted and closed at once"
        ).format(peer=self.peer, clients=count_clients(self.active), limit=self.limit)


@event
class AcceptPaused(Event):
    name = "accept_paused"
    label = N_("OVERLOADED")
    error: str
    active: int

    def explain(self) -> str:
        return _(
            "cannot accept new clients: {error}, with {clients} connected; they are still "
            "served, and accepting resumes when resources free up"
        ).format(error=self.error, clients=count_clients(self.active))


@event
class AcceptResumed(Event):
    name = "accept_resumed"
    label = N_("RECOVERED")
    failures: int
    paused: float

    def explain(self) -> str:
        attempts = ngettext("{n} failed attempt", "{n} failed attempts", self.failures)
        return _("accepting new clients again after {s:.3f} s ({attempts})").format(
            s=self.paused, attempts=attempts.format(n=self.failures)
        )


@event
class Received(Event):
    name = "received"
    label = N_("RECEIVED")
    data = True
    conn: int
    bytes: int
    preview: str

    def explain(self) -> str:
        # One template with its plural (not `count_bytes`): two of these go out per echo.
        return ngettext(
            "client #{conn} sent {n} byte: {said}",
            "client #{conn} sent {n} bytes: {said}",
            self.bytes,
        ).format(conn=self.conn, n=self.bytes, said=quoted(self.preview, self.bytes))


@event
class Datagram(Event):
    name = "datagram"
    label = N_("DATAGRAM")
    data = True
    peer: str
    bytes: int
    preview: str

    def explain(self) -> str:
        return _("a datagram of {bytes} from {peer}, echoed: {said}").format(
            bytes=count_bytes(self.bytes), peer=self.peer, said=quoted(self.preview, self.bytes)
        )


_DROP_WHY: Final = {
    "loop_guard": N_("from a source port below 1024, where services live (loop guard)"),
    "rate_limit": N_("over the per-source rate limit (--udp-rate)"),
    "broadcast": N_("sent to a broadcast or multicast address"),
    "truncated": N_("larger than any UDP datagram can be"),
}


@event
class UdpDropped(Event):
    name = "udp_dropped"
    label = N_("UDP DROPPED")
    count: int
    reasons: dict[str, int]
    top_sources: list[str]

    def explain(self) -> str:
        why = "; ".join(
            f"{n} {_(_DROP_WHY.get(reason, reason))}" for reason, n in self.reasons.items()
        )
        return _("did not answer {datagrams}: {why}; most from {sources}").format(
            datagrams=count_datagrams(self.count), why=why, sources=", ".join(self.top_sources)
        )


@event
class Sent(Event):
    name = "sent"
    label = N_("SENT")
    data = True
    conn: int
    bytes: int

    def explain(self) -> str:
        return ngettext(
            "echoed {n} byte back to client #{conn}", "echoed {n} bytes back to client #{conn}",
            self.bytes,
        ).format(n=self.bytes, conn=self.conn)  # fmt: skip


_DISCONNECT_WHY: Final[dict[DisconnectReason, str]] = {
    "exit": N_("it sent the line `exit`, so the server ended the session"),
    "eof": N_("it closed its side (end of input) and the server echoed everything it had sent"),
    "reset": N_("the connection was reset or broken (the client aborted or vanished)"),
    "shutdown": N_("the server is shutting down"),
    "timeout": N_("it sent nothing for longer than the idle timeout (--idle-timeout)"),
    "tls_error": N_("the TLS handshake failed"),
    "error": N_("an error"),
}


@event
class Disconnected(Event):
    name = "disconnected"
    label = N_("DISCONNECT")
    conn: int
    reason: DisconnectReason
    bytes_in: int
    bytes_out: int
    duration: float
    detail: str = ""

    def explain(self) -> str:
        why = _with_detail(_(_DISCONNECT_WHY[self.reason]), self.detail)
        return _(
            "client #{conn} disconnected: {why}; {bytes_in} in, {bytes_out} out, after {s:.3f} s"
        ).format(
            conn=self.conn, why=why, bytes_in=count_bytes(self.bytes_in),
            bytes_out=count_bytes(self.bytes_out), s=self.duration,
        )  # fmt: skip


@event
class Stopping(Event):
    name = "stopping"
    label = N_("STOPPING")
    reason: str
    active: int
    timeout: float
    drain: float = 0.0  # seconds still serving newcomers, health checks failing, first

    def explain(self) -> str:
        if self.drain:
            return _(
                "stopping on {signal}: draining first: for {drain:g} s health checks fail (so "
                "that the load balancer sends no new clients) and every client is still served; "
                "then no new clients, and the echo finishes (at most {timeout:g} s). Press "
                "Ctrl-C again to stop at once"
            ).format(signal=self.reason, drain=self.drain, timeout=self.timeout)
        return _(
            "stopping on {signal}: no new clients; finishing the echo for {clients} (at most "
            "{timeout:g} s). Press Ctrl-C again to stop at once"
        ).format(
            signal=self.reason,
            clients=ngettext("{n} connected client", "{n} connected clients", self.active).format(
                n=self.active
            ),
            timeout=self.timeout,
        )


@event
class Stopped(Event):
    name = "stopped"
    label = N_("STOPPED")
    connections: int
    bytes_in: int
    bytes_out: int
    uptime: float
    datagrams_in: int = 0
    datagrams_out: int = 0
    udp_bytes_in: int = 0
    udp_bytes_out: int = 0

    def explain(self) -> str:
        udp = ""
        if self.datagrams_in:
            udp = _(
                "; over UDP {datagrams} in ({bytes_in}), {answered} answered ({bytes_out})"
            ).format(
                datagrams=count_datagrams(self.datagrams_in),
                bytes_in=count_bytes(self.udp_bytes_in),
                answered=self.datagrams_out, bytes_out=count_bytes(self.udp_bytes_out),
            )  # fmt: skip
        return _(
            "stopped after {s:.3f} s: served {clients}, {bytes_in} in, {bytes_out} out{udp}"
        ).format(
            s=self.uptime, clients=count_clients(self.connections),
            bytes_in=count_bytes(self.bytes_in), bytes_out=count_bytes(self.bytes_out), udp=udp,
        )  # fmt: skip


# ---- the log's own -----------------------------------------------------------------------


@event
class LogDropped(Event):
    name = "log_dropped"
    label = N_("LOG DROPPED")
    events: int

    def explain(self) -> str:
        return ngettext(
            "{n} event left out of this log: it could not be written as fast as they came (a "
            "slow terminal, pipe or disk); --quiet leaves out the per-data events",
            "{n} events left out of this log: it could not be written as fast as they came (a "
            "slow terminal, pipe or disk); --quiet leaves out the per-data events",
            self.events,
        ).format(n=self.events)


# ---- client events ----------------------------------------------------------------------


@event
class Connecting(Event):
    name = "connecting"
    label = N_("CONNECTING")
    host: str
    port: int

    def explain(self) -> str:
        return _("connecting to {where} ...").format(where=format_address(self.host, self.port))


@event
class ConnectedTo(Event):
    name = "connected"
    label = N_("CONNECTED")
    local: str
    peer: str
    transport: Literal["tcp", "udp"] = "tcp"
    end_of_input: str = "Ctrl-D"  # the keys that end a terminal's input here (Windows: Ctrl-Z)

    def explain(self) -> str:
        if self.transport == "udp":
            return _(
                "sending UDP datagrams from {local} to {peer}: each line is one; {eof} to finish"
            ).format(local=self.local, peer=self.peer, eof=self.end_of_input)
        return _(
            "connected from {local} to {peer}; type lines to send them, `exit` or {eof} to finish"
        ).format(local=self.local, peer=self.peer, eof=self.end_of_input)


_TRUST_WORDS: Final = {
    "ca": N_("verified: signed by a trusted CA and valid for the name"),
    "fingerprint": N_("trusted by its pinned fingerprint (nothing else checked)"),
    "insecure": N_("NOT VERIFIED (--tls-insecure): ANYONE ON THE WAY COULD READ OR CHANGE THIS"),
}


@event
class TlsSecured(Event):
    name = "tls_established"
    label = N_("TLS")
    version: str
    cipher: str
    subject: str
    issuer: str
    not_after: str
    fingerprint: str
    trust: Literal["ca", "fingerprint", "insecure"]

    def explain(self) -> str:
        return _(
            "secured with {version}, {cipher}; the server's certificate: {subject}, issued by "
            "{issuer}, valid until {not_after}, {fingerprint}; {trust}"
        ).format(
            version=self.version, cipher=self.cipher, subject=self.subject or _("(no subject)"),
            issuer=self.issuer, not_after=self.not_after, fingerprint=self.fingerprint,
            trust=_(_TRUST_WORDS[self.trust]),
        )  # fmt: skip


@event
class DataSent(Event):
    name = "sent"
    label = N_("SENT")
    data = True
    bytes: int
    preview: str

    def explain(self) -> str:
        return _("sent {bytes} to the server: {said}").format(
            bytes=count_bytes(self.bytes), said=quoted(self.preview, self.bytes)
        )


@event
class DataReceived(Event):
    name = "received"
    label = N_("RECEIVED")
    data = True
    bytes: int
    preview: str

    def explain(self) -> str:
        return _("received {bytes} back from the server: {said}").format(
            bytes=count_bytes(self.bytes), said=quoted(self.preview, self.bytes)
        )


_CLIENT_END_WHY: Final[dict[ClientEndReason, str]] = {
    "exit": N_("you sent `exit` and the server closed the session"),
    "eof": N_("your input ended and the server echoed everything and closed"),
    "no_close": N_(
        "your input ended and the echo stopped, but the server kept the connection open, so "
        "the client closed it"
    ),
    "echo_mismatch": N_("the echo did not match what was sent"),
    "stalled": N_("the server stopped echoing, so the client gave up"),
    "server_closed": N_("the server closed the connection before the session was over"),
    "reset": N_("the connection was reset or broken"),
    "tls_error": N_("a TLS error"),
    "no_exit_reply": N_(
        "you sent `exit` but the server kept the connection open (a plain echo server "
        "that ignores `exit`), so the client closed it"
    ),
    "error": N_("an error"),
}


@event
class SessionEnded(Event):
    name = "disconnected"
    label = N_("DISCONNECT")
    reason: ClientEndReason
    bytes_out: int
    bytes_in: int
    duration: float
    detail: str = ""

    def explain(self) -> str:
        why = _with_detail(_(_CLIENT_END_WHY[self.reason]), self.detail)
        return _(
            "disconnected: {why}; {bytes_out} sent, {bytes_in} received, after {s:.3f} s"
        ).format(
            why=why, bytes_out=count_bytes(self.bytes_out), bytes_in=count_bytes(self.bytes_in),
            s=self.duration,
        )  # fmt: skip


# ---- the UDP client's events --------------------------------------------------------------


@event
class DatagramSent(Event):
    name = "datagram_sent"
    label = N_("SENT")
    data = True
    number: int
    bytes: int
    attempt: int
    preview: str

    def explain(self) -> str:
        again = "" if self.attempt == 1 else _(" (attempt {n}: no echo yet)").format(n=self.attempt)
        return _("sent datagram #{number}, {bytes}{again}: {said}").format(
            number=self.number, bytes=count_bytes(self.bytes), again=again,
            said=quoted(self.preview, self.bytes),
        )  # fmt: skip


@event
class DatagramEchoed(Event):
    name = "datagram_received"
    label = N_("RECEIVED")
    data = True
    number: int
    bytes: int
    rtt: float
    late: bool

    def explain(self) -> str:
        if self.late:
            return _(
                "datagram #{number} came back late ({bytes}), after the client had moved on: out "
                "of order or duplicated"
            ).format(number=self.number, bytes=count_bytes(self.bytes))
        return _("datagram #{number} came back, {bytes}, after {ms:.3f} ms").format(
            number=self.number, bytes=count_bytes(self.bytes), ms=self.rtt * 1000
        )


@event
class UdpSessionEnded(Event):
    name = "disconnected"
    label = N_("DONE")
    reason: Literal["echoed", "lost", "refused"]
    sent: int
    echoed: int
    lost: int
    duplicated: int
    reordered: int
    rtt_min: float | None
    rtt_avg: float | None
    rtt_max: float | None
    detail: str = ""

    def explain(self) -> str:
        rtt = ""
        if self.rtt_avg is not None:
            figures = (self.rtt_min, self.rtt_avg, self.rtt_max)
            rtt = _("; rtt min/avg/max = {figures} ms").format(
                figures="/".join(f"{(v or 0) * 1000:.3f}" for v in figures)
            )
        loss = 100 * self.lost / self.sent if self.sent else 0.0
        if self.reason == "echoed":
            head = _("every datagram came back")
        elif self.reason == "lost":
            head = ngettext(
                "{n} datagram did not come back", "{n} datagrams did not come back", self.lost
            ).format(n=self.lost)
        else:
            head = _("nothing listens on that UDP port (ICMP port unreachable)")
        return _with_detail(
            _(
                # xgettext:no-python-format
                "{head}: {sent} sent, {echoed} echoed, {lost} lost ({loss:.1f}% loss), "
                "{duplicated} duplicated, {reordered} out of order{rtt}"
            ).format(
                head=head, sent=self.sent, echoed=self.echoed, lost=self.lost, loss=loss,
                duplicated=self.duplicated, reordered=self.reordered, rtt=rtt,
            ),
            self.detail,
        )  # fmt: skip


# ---- rendering ----------------------------------------------------------------------------

Emit = Callable[[Event], None]


def ignore(_event: Event) -> None:
    """An `Emit` that drops every event: the default for embedding."""


@lru_cache(maxsize=8)
def _stamp(millis: int) -> str:
    # Local time of day to the millisecond; a busy server logs many events in each one.
    second, millis = divmod(millis, 1000)
    return time.strftime("%H:%M:%S", time.localtime(second)) + f".{millis:03d}"


@lru_cache(maxsize=64)
def _padded(label: str) -> str:
    return label.ljust(LABEL_WIDTH)


def render_text(event: Event, when: float, worker: int | None = None) -> str:
    stamp = _stamp(int(when * 1000))
    if worker is not None:
        stamp = f"{stamp} w{worker}"
    return f"{stamp} {_padded(_(event.label))} {event.explain()}"


def render_json(event: Event, when: float, worker: int | None = None) -> str:
    import json  # here: a text log, the default, need not pay for it at every start

    record: dict[str, object] = {"time": round(when, 6), "event": event.name}
    if worker is not None:
        record["worker"] = worker
    for key, value in event.fields().items():
        record[key] = round(value, 6) if isinstance(value, float) else value
    record["message"] = event.explain()
    return json.dumps(record, ensure_ascii=True)


RENDERERS: Final[dict[LogFormat, Callable[[Event, float, int | None], str]]] = {
    "text": render_text,
    "json": render_json,
}
