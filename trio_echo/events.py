"""The one vocabulary of events, as data: what happened, never how it is said.

Every event is a small slotted dataclass, made once and never changed (a value; mypy holds
code to that). Its class names it uniquely (`server.*`, `client.*`, `log.*`: the JSON
`event`); its fields are the JSON fields, and hold only codes, numbers, addresses and escaped
previews of client bytes, never words of a language. Where an event carries an explanation
(why a TLS handshake failed, what was wrong with a PROXY header), the field is `Words`: a
code for programs, with the English sentence and its arguments kept apart, translated only
when `rendering` says it. `schema` publishes the whole contract as a JSON Schema.

Client data reaches the log only through `preview`, which escapes everything that is not
plainly printable, so that no client can write terminal escapes or fake lines into a log.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Final, Literal, TypeVar, dataclass_transform

PREVIEW_BYTES: Final = 32

RejectReason = Literal[
    "max_connections", "bad_proxy_header", "untrusted_proxy", "draining", "denied"
]
DisconnectReason = Literal[
    "exit", "eof", "reset", "shutdown", "timeout", "stalled", "tls_error", "error",
    "served", "too_big", "protocol_error", "max_bytes", "max_duration",
]  # fmt: skip
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
# How far a listening address can be reached: from this machine only, from anywhere (at any
# address of this machine), or at that one address.
Reach = Literal["loopback", "any", "address"]

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


def escaped(text: str) -> str:
    """Text a peer chose (a certificate's subject, a server name), whole, escaped as `preview`
    escapes client bytes: safe for any log line and any terminal."""
    data = text.encode("utf-8", "surrogateescape")
    return preview(data, len(data))


def quoted(preview_text: str, size: int) -> str:
    """A preview in quotes for a text line, marked when it was cut short."""
    return f'"{preview_text}"' + ("..." if size > PREVIEW_BYTES else "")


def format_address(host: str, port: int) -> str:
    """host:port, with IPv6 hosts in brackets as in URLs."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def reachability(host: str) -> Reach:
    """How far a listening address can be reached."""
    if host in ("0.0.0.0", "::"):
        return "any"
    if host.startswith("127.") or host == "::1":
        return "loopback"
    return "address"


@dataclass(frozen=True, slots=True)
class Words:
    """An explanation to be said later, in the reader's language.

    `code` names it for programs (stable; the schema lists them). `text` is the English
    sentence with `{placeholders}`: a message catalog's msgid, marked with `N_` where it is
    written and translated only by `rendering`. `args` fill the placeholders: numbers, codes,
    addresses, escaped previews, or more `Words`. In JSON it is an object: its code and its
    arguments.
    """

    code: str
    text: str
    args: tuple[tuple[str, object], ...] = ()


def says(code: str, text: str, /, **args: object) -> Words:
    """`Words` with keyword arguments: ``says("timeout", N_("no header in {s} s"), s=5)``."""
    return Words(code, text, tuple(args.items()))


_E = TypeVar("_E")


@dataclass_transform(frozen_default=True, eq_default=True)
def event(cls: type[_E]) -> type[_E]:
    """An event class: a dataclass with slots whose `__eq__`, `__hash__` and `__repr__` are
    `Event`'s, written once, not generated per class. Frozen for mypy, not at run time: both
    cost start-up time or every event (scripts/bench/benchmarks.md, "The measurements behind
    the code's shape"). A class without a docstring gets its name as one (`dataclass` would
    otherwise work out its signature with `inspect`)."""
    cls.__doc__ = cls.__doc__ or cls.__name__
    return dataclass(slots=True, eq=False, repr=False, match_args=False)(cls)


@event
class Event:
    """Base of all events. Subclasses set `name`, unique: the JSON `event`."""

    name: ClassVar[str]
    # One per read or write (`--quiet` leaves these out; a log that falls behind, too).
    data: ClassVar[bool] = False

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
    """The server's settings, before it binds: the first line of its log."""

    name = "server.starting"
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
    server_name: str = ""  # --name: which server this is (default: the host name)


@event
class LimitWarning(Event):
    """--max-connections is more than the descriptor limit has room for."""

    name = "server.limit_warning"
    max_connections: int
    fd_limit: int
    room: int


@event
class WorkersWarning(Event):
    """--workers is more than the cores this process may run on: the extra workers only
    take turns on the same cores."""

    name = "server.workers_warning"
    workers: int
    cores: int


@event
class Listening(Event):
    """A socket is bound and served (one event per address, TCP or UDP)."""

    name = "server.listening"
    host: str
    port: int
    reach: Reach
    tls_fingerprint: str | None = None  # the certificate's, when the port speaks TLS
    # http: the page and WebSocket echo; metrics: the operator's port
    transport: Literal["tcp", "udp", "http", "metrics"] = "tcp"
    activated: bool = False  # the socket was handed over by systemd, not bound here


@event
class Connected(Event):
    """A client connected; `conn` numbers it in every later event of its session."""

    name = "server.connected"
    conn: int
    peer: str | None  # None: the connection was gone before its address could be read
    active: int
    via: str | None = None  # the load balancer's address, when a PROXY header named the peer
    health_check: bool = False  # a PROXY v2 LOCAL header: the balancer's own connection
    transport: Literal["tcp", "http"] = "tcp"  # the port it came to: the echo's, or --http


@event
class TlsEstablished(Event):
    """A client's TLS handshake succeeded."""

    name = "server.tls_established"
    conn: int
    version: str
    cipher: str
    sni: str | None
    client_cert: str | None


@event
class Rejected(Event):
    """A connection was turned away (and closed) before it was served."""

    name = "server.rejected"
    peer: str | None
    reason: RejectReason
    active: int
    limit: int
    detail: Words | None = None


@event
class AcceptPaused(Event):
    """Accepting stopped: the process is out of descriptors or memory; clients already
    connected are still served."""

    name = "server.accept_paused"
    error: str  # the errno's name: EMFILE, ENFILE, ENOMEM, ENOBUFS
    active: int


@event
class AcceptResumed(Event):
    """Accepting works again after a pause."""

    name = "server.accept_resumed"
    failures: int
    paused: float


@event
class Received(Event):
    """One read of a client's bytes (a data event: left out with --quiet)."""

    name = "server.received"
    data = True
    conn: int
    bytes: int
    preview: str


@event
class Datagram(Event):
    """A UDP datagram, answered with its echo (a data event)."""

    name = "server.datagram"
    data = True
    peer: str
    bytes: int
    preview: str


@event
class UdpDropped(Event):
    """UDP datagrams not answered, counted by reason (at most one event a second)."""

    name = "server.udp_dropped"
    count: int
    reasons: dict[str, int]
    top_sources: list[str]


@event
class HttpRequest(Event):
    """A request on the HTTP port (--http) and the status it got; 101 for a WebSocket."""

    name = "server.http_request"
    conn: int
    method: str | None  # escaped as a preview is; None: no valid request came
    target: str | None
    status: int


@event
class WebSocketOpened(Event):
    """A connection of the HTTP port became a WebSocket: its messages are echoed now, each
    a `received` and a `sent` event, as a TCP echo's reads are."""

    name = "server.websocket_opened"
    conn: int
    compression: bool  # permessage-deflate, with the inflated size bounded


@event
class Sent(Event):
    """One echo written back in full (a data event)."""

    name = "server.sent"
    data = True
    conn: int
    bytes: int


@event
class Disconnected(Event):
    """A client's session ended, and why."""

    name = "server.disconnected"
    conn: int
    reason: DisconnectReason
    bytes_in: int
    bytes_out: int
    duration: float
    detail: Words | None = None


@event
class Stopping(Event):
    """The server was asked to stop: it drains (with --drain-timeout), then accepts no one
    new and finishes the echoes in flight."""

    name = "server.stopping"
    reason: str  # a signal's name (SIGINT, SIGTERM, SIGBREAK), "request", "supervisor", "abort"
    active: int
    timeout: float
    drain: float = 0.0  # seconds still serving newcomers, health checks failing, first


@event
class Stopped(Event):
    """The server has stopped: its totals. The last line of its log."""

    name = "server.stopped"
    connections: int
    bytes_in: int
    bytes_out: int
    uptime: float
    datagrams_in: int = 0
    datagrams_out: int = 0
    udp_bytes_in: int = 0
    udp_bytes_out: int = 0


# ---- the log's own -----------------------------------------------------------------------


@event
class LogDropped(Event):
    """Events the log could not write as fast as they came, left out."""

    name = "log.dropped"
    events: int


# ---- client events ----------------------------------------------------------------------


@event
class Connecting(Event):
    """The client is connecting."""

    name = "client.connecting"
    host: str
    port: int


@event
class ConnectedTo(Event):
    """The client's connection is open (TCP), or its socket ready (UDP)."""

    name = "client.connected"
    local: str
    peer: str
    transport: Literal["tcp", "udp", "websocket"] = "tcp"
    end_of_input: str = "Ctrl-D"  # the keys that end a terminal's input here (Windows: Ctrl-Z)


@event
class TlsSecured(Event):
    """The client's TLS handshake succeeded: the server's certificate and how it was
    trusted."""

    name = "client.tls_established"
    version: str
    cipher: str
    subject: str
    issuer: str
    not_after: str
    fingerprint: str
    trust: Literal["ca", "fingerprint", "insecure"]


@event
class DataSent(Event):
    """The client sent bytes (a data event)."""

    name = "client.sent"
    data = True
    bytes: int
    preview: str


@event
class DataReceived(Event):
    """The client received echoed bytes (a data event)."""

    name = "client.received"
    data = True
    bytes: int
    preview: str


@event
class SessionEnded(Event):
    """The client's TCP session ended, and why."""

    name = "client.disconnected"
    reason: ClientEndReason
    bytes_out: int
    bytes_in: int
    duration: float
    detail: Words | None = None


# ---- the UDP client's events --------------------------------------------------------------


@event
class DatagramSent(Event):
    """The UDP client sent a datagram (again, for attempt > 1) (a data event)."""

    name = "client.datagram_sent"
    data = True
    number: int
    bytes: int
    attempt: int
    preview: str


@event
class DatagramEchoed(Event):
    """A datagram's echo came back (a data event)."""

    name = "client.datagram_received"
    data = True
    number: int
    bytes: int
    rtt: float
    late: bool


@event
class UdpSessionEnded(Event):
    """The UDP client's session ended: its counts and round-trip times."""

    name = "client.udp_done"
    reason: Literal["echoed", "lost", "refused"]
    sent: int
    echoed: int
    lost: int
    duplicated: int
    reordered: int
    rtt_min: float | None
    rtt_avg: float | None
    rtt_max: float | None
    detail: Words | None = None


# ---- where events go ------------------------------------------------------------------------

Emit = Callable[[Event], None]


def ignore(_event: Event) -> None:
    """An `Emit` that drops every event: the default for embedding."""
