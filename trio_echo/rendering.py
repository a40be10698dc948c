"""How events are said: every word of the event log, in the reader's language, and the two
renderings, human text lines and JSON lines.

`events` holds what happened, as codes and numbers; this module alone turns them into
sentences (through gettext, `i18n`), at the moment a line is written. So a JSON line's values
are the same in every language, and only its `message` is translated; a text line is the
time, a label and the message.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Final, Literal, TypeVar

from trio_echo.events import (
    AcceptPaused,
    AcceptResumed,
    ClientEndReason,
    Connected,
    ConnectedTo,
    Connecting,
    Datagram,
    DatagramEchoed,
    DatagramSent,
    DataReceived,
    DataSent,
    Disconnected,
    DisconnectReason,
    Event,
    HttpRequest,
    LimitWarning,
    Listening,
    LogDropped,
    Received,
    Rejected,
    Sent,
    ServerStarting,
    SessionEnded,
    Stopped,
    Stopping,
    TlsEstablished,
    TlsSecured,
    UdpDropped,
    UdpSessionEnded,
    WebSocketOpened,
    Words,
    WorkersWarning,
    format_address,
    quoted,
)
from trio_echo.i18n import N_, _, ngettext

LABEL_WIDTH: Final = 12

LogFormat = Literal["text", "json"]
LOG_FORMATS: Final[tuple[LogFormat, ...]] = ("text", "json")

# The text log's labels, one column wide (translated: the Russian ones keep the width).
LABELS: Final[dict[type[Event], str]] = {
    ServerStarting: N_("START"),
    LimitWarning: N_("WARNING"),
    WorkersWarning: N_("WARNING"),
    Listening: N_("LISTEN"),
    Connected: N_("CONNECT"),
    TlsEstablished: N_("TLS"),
    HttpRequest: N_("HTTP"),
    WebSocketOpened: N_("WEBSOCKET"),
    Rejected: N_("REJECT"),
    AcceptPaused: N_("OVERLOADED"),
    AcceptResumed: N_("RECOVERED"),
    Received: N_("RECEIVED"),
    Datagram: N_("DATAGRAM"),
    UdpDropped: N_("UDP DROPPED"),
    Sent: N_("SENT"),
    Disconnected: N_("DISCONNECT"),
    Stopping: N_("STOPPING"),
    Stopped: N_("STOPPED"),
    LogDropped: N_("LOG DROPPED"),
    Connecting: N_("CONNECTING"),
    ConnectedTo: N_("CONNECTED"),
    TlsSecured: N_("TLS"),
    DataSent: N_("SENT"),
    DataReceived: N_("RECEIVED"),
    SessionEnded: N_("DISCONNECT"),
    DatagramSent: N_("SENT"),
    DatagramEchoed: N_("RECEIVED"),
    UdpSessionEnded: N_("DONE"),
}


def say(words: Words) -> str:
    """`words` in the reader's language."""
    args = {key: say(value) if isinstance(value, Words) else value for key, value in words.args}
    return _(words.text).format(**args)


def json_value(value: object) -> object:
    """A field's value in a JSON line: `Words` as its code and arguments, floats rounded to
    the microsecond, everything else as it is."""
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, Words):
        return {"code": value.code, **{key: json_value(arg) for key, arg in value.args}}
    return value


def count_bytes(count: int) -> str:
    return ngettext("{n} byte", "{n} bytes", count).format(n=count)


def count_clients(count: int) -> str:
    return ngettext("{n} client", "{n} clients", count).format(n=count)


def count_datagrams(count: int) -> str:
    return ngettext("{n} datagram", "{n} datagrams", count).format(n=count)


def _with_detail(why: str, detail: Words | None) -> str:
    return why if detail is None else f"{why} ({say(detail)})"


def _peer(peer: str | None) -> str:
    return _("(already gone)") if peer is None else peer


def _reach(event: Listening) -> str:
    if event.reach == "any":
        return _("reachable from other machines at any address of this machine")
    if event.reach == "loopback":
        return _(
            "from this machine only (loopback); start with --host 0.0.0.0 or --host :: "
            "to be reachable from other machines"
        )
    return _("reachable from other machines at {host}").format(host=event.host)


def _errno_text(code: str) -> str:
    number = getattr(errno, code, None)
    return code if number is None else f"{code} ({os.strerror(number)})"


# How a person sends each stop signal, where that differs from its name (the keys are named
# the same in every language), and the stops that are not signals.
_STOP_KEYS: Final = {"SIGINT": "Ctrl-C", "SIGBREAK": "Ctrl-Break"}
_STOP_WORDS: Final = {
    "request": N_("request"),
    "supervisor": N_("the end of its supervisor"),
    "abort": N_("abort"),
}


def _stop_reason(code: str) -> str:
    if code in _STOP_KEYS:
        return f"{code} ({_STOP_KEYS[code]})"
    return _(_STOP_WORDS[code]) if code in _STOP_WORDS else code


_E = TypeVar("_E", bound=Event)
_EXPLAIN: Final[dict[type[Event], Callable[[Event], str]]] = {}


def explains(cls: type[_E]) -> Callable[[Callable[[_E], str]], Callable[[_E], str]]:
    """Register the sentence for one event class."""

    def register(function: Callable[[_E], str]) -> Callable[[_E], str]:
        _EXPLAIN[cls] = function  # type: ignore[assignment]
        return function

    return register


def explain(event: Event) -> str:
    """What happened, in a sentence a student understands, in the reader's language."""
    return _EXPLAIN[type(event)](event)


# ---- the sentences, event by event -----------------------------------------------------------


@explains(ServerStarting)
def _server_starting(event: ServerStarting) -> str:
    command = (
        _("on (a line `exit` ends a session)") if event.exit_command else _("off (plain echo)")
    )
    idle = _("off") if event.idle_timeout is None else _("{s:g} s").format(s=event.idle_timeout)
    source = _("ephemeral self-signed") if event.tls == "ephemeral self-signed" else event.tls
    tls = "" if source is None else _(" over TLS (certificate: {path})").format(path=source)
    if event.fd_limit is not None:
        fds = _(" (descriptor limit {n:,})").format(n=event.fd_limit)
    elif event.system == "windows":
        fds = _(" (sockets have no descriptor limit on Windows)")
    else:
        fds = ""
    where = format_address(event.host, event.port)
    if event.activated:
        where = _("the sockets systemd handed over")
    stops = ""
    if event.stop_signals:
        keys = [_STOP_KEYS.get(code, code) for code in event.stop_signals]
        stops = _("; {keys} stops it").format(keys=_(" or ").join(keys))
    if event.server_name:
        stops += _("; its name is {name!r}").format(name=event.server_name)
    return _(
        "trio-echo {version} starting (pid {pid}) on {where}{tls}: reads of up to {chunk}, "
        "exit command {command}, at most {clients} at once{fds}, idle timeout {idle}, "
        "shutdown timeout {shutdown:g} s"
    ).format(
        version=event.version, pid=event.pid, where=where, tls=tls,
        chunk=count_bytes(event.chunk_size), command=command,
        clients=count_clients(event.max_connections), fds=fds, idle=idle,
        shutdown=event.shutdown_timeout,
    ) + stops  # fmt: skip


@explains(WorkersWarning)
def _workers_warning(event: WorkersWarning) -> str:
    return _(
        "--workers {workers} is more than the {cores} cores this server may run on: the extra "
        "workers only take turns on them (one worker per core at most)"
    ).format(workers=event.workers, cores=event.cores)


@explains(LimitWarning)
def _limit_warning(event: LimitWarning) -> str:
    return _(
        "--max-connections {max:,} is more than the descriptor limit ({limit:,}) has room "
        "for (about {room:,} clients): past that, accepting pauses (EMFILE) instead of "
        "turning clients away; raise the hard limit (ulimit -Hn, LimitNOFILE=) or lower "
        "--max-connections"
    ).format(max=event.max_connections, limit=event.fd_limit, room=event.room)


@explains(Listening)
def _listening(event: Listening) -> str:
    local = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(event.host, event.host)
    command = f"trio-echo-client --host {local} --port {event.port}"
    where = format_address(event.host, event.port)
    if event.activated:
        where += _(" (a socket handed over by systemd)")
    if event.transport == "udp":
        return _("answering UDP datagrams on {where}: {reach}. Try: {command} --udp").format(
            where=where, reach=_reach(event), command=command
        )
    if event.transport == "metrics":
        return _(
            "serving /metrics (Prometheus), /healthz, /readyz and /info on {where}: {reach}"
        ).format(where=where, reach=_reach(event))
    if event.transport == "http":
        scheme = "http" if event.tls_fingerprint is None else "https"
        url = f"{scheme}://{format_address(local, event.port)}/"
        tls = "" if event.tls_fingerprint is None else " --tls --tls-insecure"
        return _(
            "serving the page and the WebSocket echo on {where}: {reach}. Open {url} in a "
            "browser, or try: {command} --websocket{tls}"
        ).format(where=where, reach=_reach(event), url=url, command=command, tls=tls)
    if event.tls_fingerprint is None:
        return _("listening on {where}: {reach}. Try: {command}").format(
            where=where, reach=_reach(event), command=command
        )
    return _(
        "listening on {where} with TLS: {reach}. The certificate's fingerprint is "
        "{fingerprint}. Try: {command} --tls --tls-fingerprint {fingerprint}"
    ).format(where=where, reach=_reach(event), fingerprint=event.tls_fingerprint, command=command)


@explains(Connected)
def _connected(event: Connected) -> str:
    active = ngettext("{n} client now connected", "{n} clients now connected", event.active)
    active = active.format(n=event.active)
    if event.health_check:
        return _(
            "client #{conn}: a health check from the load balancer at {peer} (PROXY LOCAL) "
            "({active})"
        ).format(conn=event.conn, peer=_peer(event.peer), active=active)
    via = "" if event.via is None else _(" via the load balancer at {via}").format(via=event.via)
    if event.transport == "http":
        via += _(" to the HTTP port")
    return _("client #{conn} connected from {peer}{via} ({active})").format(
        conn=event.conn, peer=_peer(event.peer), via=via, active=active
    )


@explains(TlsEstablished)
def _tls_established(event: TlsEstablished) -> str:
    sni = (
        _("no server name (SNI)")
        if event.sni is None
        else _("server name {name!r}").format(name=event.sni)
    )
    who = (
        _("no client certificate")
        if event.client_cert is None
        else _("client certificate {subject}").format(subject=event.client_cert)
    )
    return _("client #{conn} secured the connection: {version}, {cipher}, {sni}, {who}").format(
        conn=event.conn, version=event.version, cipher=event.cipher, sni=sni, who=who
    )


@explains(HttpRequest)
def _http_request(event: HttpRequest) -> str:
    if event.method is None:
        return _("client #{conn}: no valid HTTP request; answered {status}").format(
            conn=event.conn, status=event.status
        )
    return _("client #{conn}: {method} {target}, answered {status}").format(
        conn=event.conn, method=event.method, target=event.target, status=event.status
    )


@explains(WebSocketOpened)
def _websocket_opened(event: WebSocketOpened) -> str:
    if event.compression:
        return _(
            "client #{conn} opened a WebSocket, with compression: every message is echoed"
        ).format(conn=event.conn)
    return _("client #{conn} opened a WebSocket: every message is echoed").format(conn=event.conn)


@explains(Rejected)
def _rejected(event: Rejected) -> str:
    if event.reason == "draining":
        return _(
            "failed a health check from {peer} on purpose: the server is draining, so that "
            "the load balancer sends it no new clients"
        ).format(peer=_peer(event.peer))
    if event.reason == "bad_proxy_header":
        return _("turned away a connection from {peer}: {detail}").format(
            peer=_peer(event.peer), detail="" if event.detail is None else say(event.detail)
        )
    if event.reason == "untrusted_proxy":
        return _(
            "turned away a connection from {peer}: it may not send a PROXY header (it is not "
            "in --proxy-trusted)"
        ).format(peer=_peer(event.peer))
    if event.reason == "denied":
        return _(
            "turned away a client from {peer}: its address is denied (--allow, --deny)"
        ).format(peer=_peer(event.peer))
    return _(
        "turned away a client from {peer}: {clients} connected already, the limit "
        "(--max-connections) is {limit}; it was accepted and closed at once"
    ).format(peer=_peer(event.peer), clients=count_clients(event.active), limit=event.limit)


@explains(AcceptPaused)
def _accept_paused(event: AcceptPaused) -> str:
    return _(
        "cannot accept new clients: {error}, with {clients} connected; they are still "
        "served, and accepting resumes when resources free up"
    ).format(error=_errno_text(event.error), clients=count_clients(event.active))


@explains(AcceptResumed)
def _accept_resumed(event: AcceptResumed) -> str:
    attempts = ngettext("{n} failed attempt", "{n} failed attempts", event.failures)
    return _("accepting new clients again after {s:.3f} s ({attempts})").format(
        s=event.paused, attempts=attempts.format(n=event.failures)
    )


@explains(Received)
def _received(event: Received) -> str:
    # One template with its plural (not `count_bytes`): two of these go out per echo.
    return ngettext(
        "client #{conn} sent {n} byte: {said}",
        "client #{conn} sent {n} bytes: {said}",
        event.bytes,
    ).format(conn=event.conn, n=event.bytes, said=quoted(event.preview, event.bytes))


@explains(Datagram)
def _datagram(event: Datagram) -> str:
    return _("a datagram of {bytes} from {peer}, echoed: {said}").format(
        bytes=count_bytes(event.bytes), peer=event.peer, said=quoted(event.preview, event.bytes)
    )


_DROP_WHY: Final = {
    "loop_guard": N_("from a source port below 1024, where services live (loop guard)"),
    "rate_limit": N_("over the per-source rate limit (--udp-rate)"),
    "repeat_guard": N_(
        "the same datagram again and again, fast: an echo service bouncing our answers back "
        "(repeat guard)"
    ),
    "broadcast": N_("sent to a broadcast or multicast address"),
    "truncated": N_("larger than any UDP datagram can be"),
    "denied": N_("from an address denied (--allow, --deny)"),
}


@explains(UdpDropped)
def _udp_dropped(event: UdpDropped) -> str:
    why = "; ".join(
        f"{n} {_(_DROP_WHY.get(reason, reason))}" for reason, n in event.reasons.items()
    )
    return _("did not answer {datagrams}: {why}; most from {sources}").format(
        datagrams=count_datagrams(event.count), why=why, sources=", ".join(event.top_sources)
    )


@explains(Sent)
def _sent(event: Sent) -> str:
    return ngettext(
        "echoed {n} byte back to client #{conn}", "echoed {n} bytes back to client #{conn}",
        event.bytes,
    ).format(n=event.bytes, conn=event.conn)  # fmt: skip


_DISCONNECT_WHY: Final[dict[DisconnectReason, str]] = {
    "exit": N_("it sent the line `exit`, so the server ended the session"),
    "eof": N_("it closed its side (end of input) and the server echoed everything it had sent"),
    "reset": N_("the connection was reset or broken (the client aborted or vanished)"),
    "shutdown": N_("the server is shutting down"),
    "timeout": N_("it sent nothing for longer than the idle timeout (--idle-timeout)"),
    "stalled": N_(
        "it took none of its echo for longer than the idle timeout (--idle-timeout): it "
        "stopped reading"
    ),
    "tls_error": N_("the TLS handshake failed"),
    "error": N_("an error"),
    "served": N_("it was answered over HTTP"),
    "too_big": N_("it sent a WebSocket message larger than the limit (--ws-max-message)"),
    "protocol_error": N_("it broke the protocol (HTTP or WebSocket)"),
    "max_bytes": N_("it sent as many bytes as a session may (--max-bytes), echoed first"),
    "max_duration": N_("the session lasted as long as a session may (--max-duration)"),
}


@explains(Disconnected)
def _disconnected(event: Disconnected) -> str:
    why = _with_detail(_(_DISCONNECT_WHY[event.reason]), event.detail)
    return _(
        "client #{conn} disconnected: {why}; {bytes_in} in, {bytes_out} out, after {s:.3f} s"
    ).format(
        conn=event.conn, why=why, bytes_in=count_bytes(event.bytes_in),
        bytes_out=count_bytes(event.bytes_out), s=event.duration,
    )  # fmt: skip


@explains(Stopping)
def _stopping(event: Stopping) -> str:
    if event.drain:
        return _(
            "stopping on {signal}: draining first: for {drain:g} s health checks fail (so "
            "that the load balancer sends no new clients) and every client is still served; "
            "then no new clients, and the echo finishes (at most {timeout:g} s). Press "
            "Ctrl-C again to stop at once"
        ).format(signal=_stop_reason(event.reason), drain=event.drain, timeout=event.timeout)
    return _(
        "stopping on {signal}: no new clients; finishing the echo for {clients} (at most "
        "{timeout:g} s). Press Ctrl-C again to stop at once"
    ).format(
        signal=_stop_reason(event.reason),
        clients=ngettext("{n} connected client", "{n} connected clients", event.active).format(
            n=event.active
        ),
        timeout=event.timeout,
    )


@explains(Stopped)
def _stopped(event: Stopped) -> str:
    udp = ""
    if event.datagrams_in:
        udp = _(
            "; over UDP {datagrams} in ({bytes_in}), {answered} answered ({bytes_out})"
        ).format(
            datagrams=count_datagrams(event.datagrams_in),
            bytes_in=count_bytes(event.udp_bytes_in),
            answered=event.datagrams_out, bytes_out=count_bytes(event.udp_bytes_out),
        )  # fmt: skip
    return _(
        "stopped after {s:.3f} s: served {clients}, {bytes_in} in, {bytes_out} out{udp}"
    ).format(
        s=event.uptime, clients=count_clients(event.connections),
        bytes_in=count_bytes(event.bytes_in), bytes_out=count_bytes(event.bytes_out), udp=udp,
    )  # fmt: skip


@explains(LogDropped)
def _log_dropped(event: LogDropped) -> str:
    return ngettext(
        "{n} event left out of this log: it could not be written as fast as they came (a "
        "slow terminal, pipe or disk); --quiet leaves out the per-data events",
        "{n} events left out of this log: it could not be written as fast as they came (a "
        "slow terminal, pipe or disk); --quiet leaves out the per-data events",
        event.events,
    ).format(n=event.events)


@explains(Connecting)
def _connecting(event: Connecting) -> str:
    return _("connecting to {where} ...").format(where=format_address(event.host, event.port))


@explains(ConnectedTo)
def _connected_to(event: ConnectedTo) -> str:
    if event.transport == "udp":
        return _(
            "sending UDP datagrams from {local} to {peer}: each line is one; {eof} to finish"
        ).format(local=event.local, peer=event.peer, eof=event.end_of_input)
    return _(
        "connected from {local} to {peer}; type lines to send them, `exit` or {eof} to finish"
    ).format(local=event.local, peer=event.peer, eof=event.end_of_input)


_TRUST_WORDS: Final = {
    "ca": N_("verified: signed by a trusted CA and valid for the name"),
    "fingerprint": N_("trusted by its pinned fingerprint (nothing else checked)"),
    "insecure": N_("NOT VERIFIED (--tls-insecure): ANYONE ON THE WAY COULD READ OR CHANGE THIS"),
}


@explains(TlsSecured)
def _tls_secured(event: TlsSecured) -> str:
    return _(
        "secured with {version}, {cipher}; the server's certificate: {subject}, issued by "
        "{issuer}, valid until {not_after}, {fingerprint}; {trust}"
    ).format(
        version=event.version, cipher=event.cipher, subject=event.subject or _("(no subject)"),
        issuer=event.issuer, not_after=event.not_after, fingerprint=event.fingerprint,
        trust=_(_TRUST_WORDS[event.trust]),
    )  # fmt: skip


@explains(DataSent)
def _data_sent(event: DataSent) -> str:
    return _("sent {bytes} to the server: {said}").format(
        bytes=count_bytes(event.bytes), said=quoted(event.preview, event.bytes)
    )


@explains(DataReceived)
def _data_received(event: DataReceived) -> str:
    return _("received {bytes} back from the server: {said}").format(
        bytes=count_bytes(event.bytes), said=quoted(event.preview, event.bytes)
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


@explains(SessionEnded)
def _session_ended(event: SessionEnded) -> str:
    why = _with_detail(_(_CLIENT_END_WHY[event.reason]), event.detail)
    return _(
        "disconnected: {why}; {bytes_out} sent, {bytes_in} received, after {s:.3f} s"
    ).format(
        why=why, bytes_out=count_bytes(event.bytes_out), bytes_in=count_bytes(event.bytes_in),
        s=event.duration,
    )  # fmt: skip


@explains(DatagramSent)
def _datagram_sent(event: DatagramSent) -> str:
    again = "" if event.attempt == 1 else _(" (attempt {n}: no echo yet)").format(n=event.attempt)
    return _("sent datagram #{number}, {bytes}{again}: {said}").format(
        number=event.number, bytes=count_bytes(event.bytes), again=again,
        said=quoted(event.preview, event.bytes),
    )  # fmt: skip


@explains(DatagramEchoed)
def _datagram_echoed(event: DatagramEchoed) -> str:
    if event.late:
        return _(
            "datagram #{number} came back late ({bytes}), after the client had moved on: out "
            "of order or duplicated"
        ).format(number=event.number, bytes=count_bytes(event.bytes))
    return _("datagram #{number} came back, {bytes}, after {ms:.3f} ms").format(
        number=event.number, bytes=count_bytes(event.bytes), ms=event.rtt * 1000
    )


@explains(UdpSessionEnded)
def _udp_session_ended(event: UdpSessionEnded) -> str:
    rtt = ""
    if event.rtt_avg is not None:
        figures = (event.rtt_min, event.rtt_avg, event.rtt_max)
        rtt = _("; rtt min/avg/max = {figures} ms").format(
            figures="/".join(f"{(v or 0) * 1000:.3f}" for v in figures)
        )
    loss = 100 * event.lost / event.sent if event.sent else 0.0
    if event.reason == "echoed":
        head = _("every datagram came back")
    elif event.reason == "lost":
        head = ngettext(
            "{n} datagram did not come back", "{n} datagrams did not come back", event.lost
        ).format(n=event.lost)
    else:
        head = _("nothing listens on that UDP port (ICMP port unreachable)")
    return _with_detail(
        _(
            # xgettext:no-python-format
            "{head}: {sent} sent, {echoed} echoed, {lost} lost ({loss:.1f}% loss), "
            "{duplicated} duplicated, {reordered} out of order{rtt}"
        ).format(
            head=head, sent=event.sent, echoed=event.echoed, lost=event.lost, loss=loss,
            duplicated=event.duplicated, reordered=event.reordered, rtt=rtt,
        ),
        event.detail,
    )  # fmt: skip


# ---- the two renderings ----------------------------------------------------------------------


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
    return f"{stamp} {_padded(_(LABELS[type(event)]))} {explain(event)}"


def render_json(event: Event, when: float, worker: int | None = None) -> str:
    import json  # here: a text log, the default, need not pay for it at every start

    record: dict[str, object] = {"time": round(when, 6), "event": event.name}
    if worker is not None:
        record["worker"] = worker
    for key, value in event.fields().items():
        record[key] = json_value(value)
    record["message"] = explain(event)
    return json.dumps(record, ensure_ascii=True)


RENDERERS: Final[dict[LogFormat, Callable[[Event, float, int | None], str]]] = {
    "text": render_text,
    "json": render_json,
}
