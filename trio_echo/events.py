"""The one vocabulary of events, and its two renderings: human text and JSON lines.

Every event is a small frozen dataclass. Its class says the JSON name and the text label;
its `explain` method says, in a sentence a student understands, what happened. Its fields
are the JSON fields. Nothing else anywhere decides how an event looks.

Client data reaches the log only through `preview`, which escapes everything that is not
plainly printable, so that no client can write terminal escapes or fake lines into a log.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar, Final, Literal, TypeVar, dataclass_transform

PREVIEW_BYTES: Final = 32
LABEL_WIDTH: Final = 12

LogFormat = Literal["text", "json"]
LOG_FORMATS: Final[tuple[LogFormat, ...]] = ("text", "json")

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


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _with_detail(why: str, detail: str) -> str:
    return f"{why} ({detail})" if detail else why


def format_address(host: str, port: int) -> str:
    """host:port, with IPv6 hosts in brackets as in URLs."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


_E = TypeVar("_E")


@dataclass_transform(frozen_default=True, eq_default=True)
def event(cls: type[_E]) -> type[_E]:
    """An event class: a frozen dataclass with slots whose `__eq__`, `__hash__` and
    `__repr__` are `Event`'s, written once. Generated per class, as `dataclass` does, they
    were compiled at every start: two thirds of the events' import time, which every run
    of the client pays (measured with `python -X importtime`). A class without a docstring
    gets its name as one: `dataclass` would otherwise work out its signature with `inspect`."""
    cls.__doc__ = cls.__doc__ or cls.__name__
    return dataclass(frozen=True, slots=True, eq=False, repr=False, match_args=False)(cls)


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
    label = "START"
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

    def explain(self) -> str:
        command = "on (a line `exit` ends a session)" if self.exit_command else "off (plain echo)"
        idle = "off" if self.idle_timeout is None else f"{self.idle_timeout:g} s"
        tls = "" if self.tls is None else f" over TLS (certificate: {self.tls})"
        fds = "" if self.fd_limit is None else f" (descriptor limit {self.fd_limit:,})"
        where = format_address(self.host, self.port)
        if self.activated:
            where = "the sockets systemd handed over"
        return (
            f"trio-echo {self.version} starting (pid {self.pid}) on {where}{tls}: reads of up to "
            f"{plural(self.chunk_size, 'byte')}, exit command {command}, "
            f"at most {plural(self.max_connections, 'client')} at once{fds}, idle timeout {idle}, "
            f"shutdown timeout {self.shutdown_timeout:g} s"
        )


@event
class LimitWarning(Event):
    name = "limit_warning"
    label = "WARNING"
    max_connections: int
    fd_limit: int
    room: int

    def explain(self) -> str:
        return (
            f"--max-connections {self.max_connections:,} is more than the descriptor limit "
            f"({self.fd_limit:,}) has room for (about {self.room:,} clients): past that, "
            "accepting pauses (EMFILE) instead of turning clients away; raise the hard limit "
            "(ulimit -Hn, LimitNOFILE=) or lower --max-connections"
        )


def reachability(host: str) -> str:
    """How a listening address can be reached, in words."""
    if host in ("0.0.0.0", "::"):
        return "reachable from other machines at any address of this machine"
    if host.startswith("127.") or host == "::1":
        return (
            "from this machine only (loopback); start with --host 0.0.0.0 or --host :: "
            "to be reachable from other machines"
        )
    return f"reachable from other machines at {host}"


@event
class Listening(Event):
    name = "listening"
    label = "LISTEN"
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
            where += " (a socket handed over by systemd)"
        if self.transport == "udp":
            return f"answering UDP datagrams on {where}: {self.reach}. Try: {command} --udp"
        if self.tls_fingerprint is None:
            return f"listening on {where}: {self.reach}. Try: {command}"
        return (
            f"listening on {where} with TLS: {self.reach}. The certificate's fingerprint is "
            f"{self.tls_fingerprint}. Try: {command} --tls --tls-fingerprint "
            f"{self.tls_fingerprint}"
        )


@event
class Connected(Event):
    name = "connected"
    label = "CONNECT"
    conn: int
    peer: str
    active: int
    via: str | None = None  # the load balancer's address, when a PROXY header named the peer
    health_check: bool = False  # a PROXY v2 LOCAL header: the balancer's own connection

    def explain(self) -> str:
        if self.health_check:
            return (
                f"client #{self.conn}: a health check from the load balancer at {self.peer} "
                f"(PROXY LOCAL) ({plural(self.active, 'client')} now connected)"
            )
        via = "" if self.via is None else f" via the load balancer at {self.via}"
        return (
            f"client #{self.conn} connected from {self.peer}{via} "
            f"({plural(self.active, 'client')} now connected)"
        )


@event
class TlsEstablished(Event):
    name = "tls_established"
    label = "TLS"
    conn: int
    version: str
    cipher: str
    sni: str | None
    client_cert: str | None

    def explain(self) -> str:
        sni = "no server name (SNI)" if self.sni is None else f"server name {self.sni!r}"
        who = (
            "no client certificate"
            if self.client_cert is None
            else f"client certificate {self.client_cert}"
        )
        return (
            f"client #{self.conn} secured the connection: {self.version}, {self.cipher}, "
            f"{sni}, {who}"
        )


@event
class Rejected(Event):
    name = "rejected"
    label = "REJECT"
    peer: str
    reason: Literal["max_connections", "bad_proxy_header", "untrusted_proxy", "draining"]
    active: int
    limit: int
    detail: str = ""

    def explain(self) -> str:
        if self.reason == "draining":
            return (
                f"failed a health check from {self.peer} on purpose: the server is draining, "
                "so that the load balancer sends it no new clients"
            )
        if self.reason == "bad_proxy_header":
            return f"turned away a connection from {self.peer}: {self.detail}"
        if self.reason == "untrusted_proxy":
            return (
                f"turned away a connection from {self.peer}: it may not send a PROXY header "
                "(it is not in --proxy-trusted)"
            )
        return (
            f"turned away a client from {self.peer}: {plural(self.active, 'client')} connected "
            f"already, the limit (--max-connections) is {self.limit}; it was accepted and "
            "closed at once"
        )


@event
class AcceptPaused(Event):
    name = "accept_paused"
    label = "OVERLOADED"
    error: str
    active: int

    def explain(self) -> str:
        return (
            f"cannot accept new clients: {self.error}, with {plural(self.active, 'client')} "
            "connected; they are still served, and accepting resumes when resources free up"
        )


@event
class AcceptResumed(Event):
    name = "accept_resumed"
    label = "RECOVERED"
    failures: int
    paused: float

    def explain(self) -> str:
        return (
            f"accepting new clients again after {self.paused:.3f} s "
            f"({plural(self.failures, 'failed attempt')})"
        )


@event
class Received(Event):
    name = "received"
    label = "RECEIVED"
    data = True
    conn: int
    bytes: int
    preview: str

    def explain(self) -> str:
        said = quoted(self.preview, self.bytes)
        return f"client #{self.conn} sent {plural(self.bytes, 'byte')}: {said}"


@event
class Datagram(Event):
    name = "datagram"
    label = "DATAGRAM"
    data = True
    peer: str
    bytes: int
    preview: str

    def explain(self) -> str:
        said = quoted(self.preview, self.bytes)
        return f"a datagram of {plural(self.bytes, 'byte')} from {self.peer}, echoed: {said}"


_DROP_WHY: Final = {
    "loop_guard": "from a source port below 1024, where services live (loop guard)",
    "rate_limit": "over the per-source rate limit (--udp-rate)",
    "broadcast": "sent to a broadcast or multicast address",
    "truncated": "larger than any UDP datagram can be",
}


@event
class UdpDropped(Event):
    name = "udp_dropped"
    label = "UDP DROPPED"
    count: int
    reasons: dict[str, int]
    top_sources: list[str]

    def explain(self) -> str:
        why = "; ".join(
            f"{n} {_DROP_WHY.get(reason, reason)}" for reason, n in self.reasons.items()
        )
        return (
            f"did not answer {plural(self.count, 'datagram')}: {why}; most from "
            f"{', '.join(self.top_sources)}"
        )


@event
class Sent(Event):
    name = "sent"
    label = "SENT"
    data = True
    conn: int
    bytes: int

    def explain(self) -> str:
        return f"echoed {plural(self.bytes, 'byte')} back to client #{self.conn}"


_DISCONNECT_WHY: Final[dict[DisconnectReason, str]] = {
    "exit": "it sent the line `exit`, so the server ended the session",
    "eof": "it closed its side (end of input) and the server echoed everything it had sent",
    "reset": "the connection was reset or broken (the client aborted or vanished)",
    "shutdown": "the server is shutting down",
    "timeout": "it sent nothing for longer than the idle timeout (--idle-timeout)",
    "tls_error": "the TLS handshake failed",
    "error": "an error",
}


@event
class Disconnected(Event):
    name = "disconnected"
    label = "DISCONNECT"
    conn: int
    reason: DisconnectReason
    bytes_in: int
    bytes_out: int
    duration: float
    detail: str = ""

    def explain(self) -> str:
        why = _with_detail(_DISCONNECT_WHY[self.reason], self.detail)
        return (
            f"client #{self.conn} disconnected: {why}; {plural(self.bytes_in, 'byte')} in, "
            f"{plural(self.bytes_out, 'byte')} out, after {self.duration:.3f} s"
        )


@event
class Stopping(Event):
    name = "stopping"
    label = "STOPPING"
    reason: str
    active: int
    timeout: float
    drain: float = 0.0  # seconds still serving newcomers, health checks failing, first

    def explain(self) -> str:
        if self.drain:
            return (
                f"stopping on {self.reason}: draining first: for {self.drain:g} s health "
                "checks fail (so that the load balancer sends no new clients) and every "
                "client is still served; then no new clients, and the echo finishes "
                f"(at most {self.timeout:g} s). Press Ctrl-C again to stop at once"
            )
        return (
            f"stopping on {self.reason}: no new clients; finishing the echo for "
            f"{plural(self.active, 'connected client')} (at most {self.timeout:g} s). "
            "Press Ctrl-C again to stop at once"
        )


@event
class Stopped(Event):
    name = "stopped"
    label = "STOPPED"
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
            udp = (
                f"; over UDP {plural(self.datagrams_in, 'datagram')} in "
                f"({plural(self.udp_bytes_in, 'byte')}), {self.datagrams_out} answered "
                f"({plural(self.udp_bytes_out, 'byte')})"
            )
        return (
            f"stopped after {self.uptime:.3f} s: served {plural(self.connections, 'client')}, "
            f"{plural(self.bytes_in, 'byte')} in, {plural(self.bytes_out, 'byte')} out{udp}"
        )


# ---- the log's own -----------------------------------------------------------------------


@event
class LogDropped(Event):
    name = "log_dropped"
    label = "LOG DROPPED"
    events: int

    def explain(self) -> str:
        return (
            f"{plural(self.events, 'event')} left out of this log: it could not be written as "
            "fast as they came (a slow terminal, pipe or disk); --quiet leaves out the "
            "per-data events"
        )


# ---- client events ----------------------------------------------------------------------


@event
class Connecting(Event):
    name = "connecting"
    label = "CONNECTING"
    host: str
    port: int

    def explain(self) -> str:
        return f"connecting to {format_address(self.host, self.port)} ..."


@event
class ConnectedTo(Event):
    name = "connected"
    label = "CONNECTED"
    local: str
    peer: str
    transport: Literal["tcp", "udp"] = "tcp"

    def explain(self) -> str:
        if self.transport == "udp":
            return (
                f"sending UDP datagrams from {self.local} to {self.peer}: each line is one; "
                "Ctrl-D to finish"
            )
        return (
            f"connected from {self.local} to {self.peer}; type lines to send them, "
            "`exit` or Ctrl-D to finish"
        )


_TRUST_WORDS: Final = {
    "ca": "verified: signed by a trusted CA and valid for the name",
    "fingerprint": "trusted by its pinned fingerprint (nothing else checked)",
    "insecure": "NOT VERIFIED (--tls-insecure): ANYONE ON THE WAY COULD READ OR CHANGE THIS",
}


@event
class TlsSecured(Event):
    name = "tls_established"
    label = "TLS"
    version: str
    cipher: str
    subject: str
    issuer: str
    not_after: str
    fingerprint: str
    trust: Literal["ca", "fingerprint", "insecure"]

    def explain(self) -> str:
        return (
            f"secured with {self.version}, {self.cipher}; the server's certificate: "
            f"{self.subject or '(no subject)'}, issued by {self.issuer}, valid until "
            f"{self.not_after}, {self.fingerprint}; {_TRUST_WORDS[self.trust]}"
        )


@event
class DataSent(Event):
    name = "sent"
    label = "SENT"
    data = True
    bytes: int
    preview: str

    def explain(self) -> str:
        return (
            f"sent {plural(self.bytes, 'byte')} to the server: {quoted(self.preview, self.bytes)}"
        )


@event
class DataReceived(Event):
    name = "received"
    label = "RECEIVED"
    data = True
    bytes: int
    preview: str

    def explain(self) -> str:
        said = quoted(self.preview, self.bytes)
        return f"received {plural(self.bytes, 'byte')} back from the server: {said}"


_CLIENT_END_WHY: Final[dict[ClientEndReason, str]] = {
    "exit": "you sent `exit` and the server closed the session",
    "eof": "your input ended and the server echoed everything and closed",
    "no_close": (
        "your input ended and the echo stopped, but the server kept the connection open, so "
        "the client closed it"
    ),
    "echo_mismatch": "the echo did not match what was sent",
    "stalled": "the server stopped echoing, so the client gave up",
    "server_closed": "the server closed the connection before the session was over",
    "reset": "the connection was reset or broken",
    "tls_error": "a TLS error",
    "no_exit_reply": (
        "you sent `exit` but the server kept the connection open (a plain echo server "
        "that ignores `exit`), so the client closed it"
    ),
    "error": "an error",
}


@event
class SessionEnded(Event):
    name = "disconnected"
    label = "DISCONNECT"
    reason: ClientEndReason
    bytes_out: int
    bytes_in: int
    duration: float
    detail: str = ""

    def explain(self) -> str:
        why = _with_detail(_CLIENT_END_WHY[self.reason], self.detail)
        return (
            f"disconnected: {why}; {plural(self.bytes_out, 'byte')} sent, "
            f"{plural(self.bytes_in, 'byte')} received, after {self.duration:.3f} s"
        )


# ---- the UDP client's events --------------------------------------------------------------


@event
class DatagramSent(Event):
    name = "datagram_sent"
    label = "SENT"
    data = True
    number: int
    bytes: int
    attempt: int
    preview: str

    def explain(self) -> str:
        again = "" if self.attempt == 1 else f" (attempt {self.attempt}: no echo yet)"
        said = quoted(self.preview, self.bytes)
        return f"sent datagram #{self.number}, {plural(self.bytes, 'byte')}{again}: {said}"


@event
class DatagramEchoed(Event):
    name = "datagram_received"
    label = "RECEIVED"
    data = True
    number: int
    bytes: int
    rtt: float
    late: bool

    def explain(self) -> str:
        if self.late:
            return (
                f"datagram #{self.number} came back late ({plural(self.bytes, 'byte')}), "
                "after the client had moved on: out of order or duplicated"
            )
        return (
            f"datagram #{self.number} came back, {plural(self.bytes, 'byte')}, after "
            f"{self.rtt * 1000:.3f} ms"
        )


@event
class UdpSessionEnded(Event):
    name = "disconnected"
    label = "DONE"
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
            rtt = "; rtt min/avg/max = " + "/".join(f"{(v or 0) * 1000:.3f}" for v in figures)
            rtt += " ms"
        loss = 100 * self.lost / self.sent if self.sent else 0.0
        head = {
            "echoed": "every datagram came back",
            "lost": f"{plural(self.lost, 'datagram')} did not come back",
            "refused": "nothing listens on that UDP port (ICMP port unreachable)",
        }[self.reason]
        return _with_detail(
            f"{head}: {self.sent} sent, {self.echoed} echoed, {self.lost} lost ({loss:.1f}% "
            f"loss), {self.duplicated} duplicated, {self.reordered} out of order{rtt}",
            self.detail,
        )


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
    return f"{stamp} {_padded(event.label)} {event.explain()}"


def render_json(event: Event, when: float, worker: int | None = None) -> str:
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
