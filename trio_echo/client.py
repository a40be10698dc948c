"""The echo client: connect, then two pumps in one nursery, and `main`.

stdin -> socket and socket -> stdout run concurrently, so a large pipe cannot deadlock and
the client notices at once when the server goes away, even while it waits for input.

Standard input and output are streams from `stdio`: worker threads for a terminal, which they
leave as they found it, and RWF_NOWAIT calls on the loop for pipes, sockets and files.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Final, Literal, final

import trio

from trio_echo import capabilities, cli, i18n, stdio
from trio_echo.events import (
    PREVIEW_BYTES,
    ClientEndReason,
    ConnectedTo,
    Connecting,
    DataReceived,
    DataSent,
    Emit,
    SessionEnded,
    TlsSecured,
    UdpSessionEnded,
    Words,
    format_address,
    ignore,
    preview,
    says,
)
from trio_echo.i18n import N_, _
from trio_echo.protocol import ExitDetector
from trio_echo.session import CLEAN_ENDS, SessionTracker

if TYPE_CHECKING:  # imported where used: a plain TCP session needs neither (start-up time)
    from trio_echo import tls, udp_client

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 7007
DEFAULT_CONNECT_TIMEOUT: Final = 10.0
# After sending `exit`, how long to wait for the server to close before closing ourselves:
# a plain RFC 862 echo server never will.
DEFAULT_EXIT_TIMEOUT: Final = 2.0
# After the end of input, how long the server may stay silent before the client stops
# waiting for the rest of the echo and for the server to close.
DEFAULT_CLOSE_TIMEOUT: Final = 10.0
# Over TLS, after our close_notify: how long to wait for the server's close (see tls.py).
CLOSE_LINGER_SECONDS: Final = 2.0
# The most echo written to standard output at once (what the socket holds, up to this).
ECHO_BATCH: Final = 4 << 20
# --udp: a datagram per this many bytes of input; how long to wait for each echo, and how
# often to send it again before giving up (defaults of the options; udp_client is imported
# only for --udp: a TCP session's start-up need not pay for it).
DEFAULT_DATAGRAM_SIZE: Final = 1024
DEFAULT_UDP_TIMEOUT: Final = 1.0
DEFAULT_UDP_RETRIES: Final = 2


@final
class Session:
    """The pumps' shared handle on one session: its `SessionTracker` (the sans-IO rule of
    what the server owes and how the session ended), the receive pump's scope (`receiving`,
    cancelled when the echo is complete before the server closes: TLS, which cannot
    half-close), and the watchdog's wait (`waiting`), whose deadline is kept at the
    tracker's after every change."""

    __slots__ = ("receiving", "tracker", "waiting")

    def __init__(self, tracker: SessionTracker) -> None:
        self.tracker = tracker
        self.receiving = trio.CancelScope()
        self.waiting = trio.CancelScope()

    def rearm(self) -> None:
        self.waiting.deadline = self.tracker.deadline()

    async def watch(self, nursery: trio.Nursery) -> None:
        """Give up on a server that stays quiet past the tracker's deadline: cancel both
        pumps (`nursery`). Woken early by nothing: the deadline only moves."""
        while True:
            self.waiting = trio.CancelScope(deadline=self.tracker.deadline())
            with self.waiting:
                await trio.sleep_forever()
            if self.tracker.expire(trio.current_time()):
                nursery.cancel_scope.cancel()
                return


async def pump_stdin_to_socket(
    source: trio.abc.ReceiveStream,
    sock: trio.abc.Stream,
    session: Session,
    emit: Emit = ignore,
    data_events: bool = True,
) -> None:
    """Send input as it comes until `exit` (sent, then nothing more) or end of input
    (then half-close, so the server knows it has everything); tell `session` each step."""
    tracker = session.tracker
    detector = ExitDetector()
    # Each piece is sent, and done with, before the next is read.
    receive = (
        source.receive_reused if isinstance(source, stdio.NowaitFdReader) else source.receive_some
    )
    while True:
        data = await receive(stdio.READ_SIZE)
        if not data:
            tracker.input_ended("exit" if detector.end_of_input() else "eof", trio.current_time())
            session.rearm()
            if isinstance(sock, trio.abc.HalfCloseableStream):
                await sock.send_eof()
            elif tracker.complete:
                session.receiving.cancel()  # nothing more will come: the session is complete
            return
        cut = detector.feed(data)
        if cut is not None:
            data = data[:cut]
            tracker.input_ended("exit", trio.current_time())
        tracker.offering(len(data), trio.current_time())
        tracker.echo.sent(data)
        session.rearm()
        await sock.send_all(data)
        tracker.sent(len(data))
        if data_events:
            emit(DataSent(bytes=len(data), preview=preview(data)))
        if cut is not None:
            return


def reusing_buffer(
    stream: trio.SocketStream,
) -> Callable[[int], Awaitable[memoryview]]:
    """`stream.receive_some` into one buffer, each piece valid until the next call; a piece
    is everything the socket holds, up to `max_bytes` (read on until it would block).

    A fresh megabyte per read, as `receive_some` allocates, costs page faults; and each piece
    is one write to standard output: fewer, larger pieces cost less. Nothing waits for more
    than is there, so a typed line still comes back at once. Errors become stream errors, as
    in `receive_some`.
    """
    buffer = bytearray(ECHO_BATCH)
    view = memoryview(buffer)
    fd = stream.socket.fileno()
    read_on = capabilities.can_read_vectors()  # else one read per call (Windows)

    failed: list[OSError] = []  # met after some bytes: said at the next call, after them

    async def receive(max_bytes: int) -> memoryview:
        limit = min(max_bytes, len(buffer))
        try:
            if failed:
                raise failed.pop()
            got = await stream.socket.recv_into(view[:limit])
        except OSError as exc:
            raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc
        while read_on and got and got < limit:  # non-blocking (trio's): more now?
            try:
                more = os.readv(fd, [view[got:limit]])
            except BlockingIOError:
                break
            except OSError as exc:
                failed.append(exc)
                break
            if not more:
                break  # the end: the next call reads it again and says so
            got += more
        return view[:got]

    return receive


async def pump_socket_to_stdout(
    sock: trio.abc.ReceiveStream,
    sink: trio.abc.SendStream,
    session: Session,
    *,
    emit: Emit = ignore,
    data_events: bool = True,
) -> None:
    """Copy the echo to `sink` exactly as it arrives, until the server closes (or, without
    a half-close, until everything sent has come back after the end of input)."""
    receive = reusing_buffer(sock) if isinstance(sock, trio.SocketStream) else sock.receive_some
    tracker = session.tracker
    while data := await receive(ECHO_BATCH):
        await sink.send_all(data)
        tracker.received(len(data), trio.current_time())
        tracker.echo.received(data)
        session.rearm()
        if data_events:
            emit(DataReceived(bytes=len(data), preview=preview(bytes(data[:PREVIEW_BYTES]))))
        if tracker.complete:
            return
    tracker.server_closed()


def _why(reason: ClientEndReason, tracker: SessionTracker, close_timeout: float) -> Words | None:
    """The detail of an end the tracker decided, where its reason alone does not say it all."""
    if reason == "stalled":
        return says(
            "stalled",
            N_("nothing came back for {seconds:g} s with {owed} bytes still owed"),
            seconds=close_timeout,
            owed=tracker.owed(),
        )
    if reason == "echo_mismatch" and tracker.echo.mismatch is not None:
        return says(
            "echo_differs",
            N_("the echo differs from what was sent at byte {at}"),
            at=tracker.echo.mismatch,
        )
    if reason == "echo_mismatch":
        return says(
            "echo_mismatch",
            N_("{bytes_in} bytes came back for {bytes_out} sent"),
            bytes_in=tracker.bytes_in,
            bytes_out=tracker.bytes_out,
        )
    return None


async def run_session(
    sock: trio.abc.Stream,
    source: trio.abc.ReceiveStream,
    sink: trio.abc.SendStream,
    *,
    emit: Emit = ignore,
    data_events: bool = True,
    exit_timeout: float = DEFAULT_EXIT_TIMEOUT,
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
) -> ClientEndReason:
    """Run both pumps until the session ends; emit and return why it ended."""
    began = trio.current_time()
    tracker = SessionTracker(
        half_close=isinstance(sock, trio.abc.HalfCloseableStream),
        exit_timeout=exit_timeout,
        close_timeout=close_timeout,
        now=began,
    )
    session = Session(tracker)
    reason: ClientEndReason = "error"
    detail: Words | None = None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump_stdin_to_socket, source, sock, session, emit, data_events)
            nursery.start_soon(session.watch, nursery)
            with session.receiving:
                await pump_socket_to_stdout(sock, sink, session, emit=emit, data_events=data_events)
            # The server closed (or, without a half-close, the echo is complete). Planned if
            # our input had ended; if not, say so now rather than at the next line typed.
            nursery.cancel_scope.cancel()
        reason = tracker.outcome()
        detail = _why(reason, tracker, close_timeout)
    except* trio.BrokenResourceError as group:
        from trio_echo import tls

        tls_detail = tls.explain_session_failure(group, tracker.bytes_in)
        if tls_detail is None:
            reason, detail = "reset", says("broken", "{error}", error=cli.describe(group))
        else:
            reason, detail = "tls_error", tls_detail
    except* OSError as group:
        reason, detail = "error", says("os_error", "{error}", error=cli.describe(group))
    finally:
        emit(
            SessionEnded(
                reason=reason,
                bytes_out=tracker.bytes_out,
                bytes_in=tracker.bytes_in,
                duration=trio.current_time() - began,
                detail=detail,
            )
        )
    return reason


ConnectFailure = Literal["resolve", "refused", "unreachable", "other"]


class ConnectFailed(cli.Fatal):
    """The connection could not be opened; `kind` says which way, the message what to do."""

    def __init__(self, kind: ConnectFailure, message: str) -> None:
        super().__init__(message)
        self.kind = kind


async def connect(host: str, port: int) -> trio.SocketStream:
    """Open the connection, or raise `ConnectFailed` with a diagnosis a user can act on.

    Bound it with `trio.fail_after`; `timed_out` words the `TooSlowError` for a user.
    """
    where = format_address(host, port)
    try:
        return await trio.open_tcp_stream(host, port)
    except socket.gaierror as exc:
        raise ConnectFailed(
            "resolve",
            _("cannot resolve host {host!r}: {error}").format(
                host=host, error=cli.os_error_text(exc)
            ),
        ) from None
    except OSError as exc:
        kinds = cli.error_kinds(exc)
        if "refused" in kinds:
            raise ConnectFailed(
                "refused",
                _(
                    "connection refused by {where}: nothing listens on that port there, or "
                    "a firewall rejects"
                ).format(where=where),
            ) from None
        if "unreachable" in kinds:
            raise ConnectFailed(
                "unreachable",
                _("cannot reach {where}: no route to the host or network").format(where=where),
            ) from None
        raise ConnectFailed(
            "other",
            _("cannot connect to {where}: {error}").format(where=where, error=cli.describe(exc)),
        ) from None


async def secure(
    sock: trio.SocketStream, settings: tls.ClientTls, host: str, port: int
) -> tuple[trio.SSLStream[tls.LingeringTransport], tls.ServerCertificate]:
    """The TLS layer over an open connection, or `tls.TlsFailed` saying what went wrong and
    what would fix it. Bound it with `trio.fail_after`, as `connect`."""
    from trio_echo import tls

    try:
        return await tls.client_handshake(
            tls.LingeringTransport(sock, CLOSE_LINGER_SECONDS), settings, host
        )
    except tls.TlsFailed as failed:
        if not isinstance(failed.__cause__, trio.BrokenResourceError) or not isinstance(
            failed.__cause__.__cause__, ssl.SSLCertVerificationError
        ):
            raise
        # Say what the server presented: a second look, this time without verifying.
        seen = None
        with trio.move_on_after(DEFAULT_CONNECT_TIMEOUT):
            second = await trio.open_tcp_stream(host, port)
            der = await tls.fetch_certificate(
                tls.LingeringTransport(second, 0), settings.server_name or host
            )
            seen = None if der is None else tls.ServerCertificate.from_der(der)
        name = settings.server_name or host
        raise tls.TlsFailed(tls.explain_verification(str(failed), seen, name)) from None


def timed_out(host: str, port: int, seconds: float) -> cli.Fatal:
    return cli.Fatal(
        _(
            "timed out connecting to {where} after {seconds:g} s: probably "
            "filtered (a firewall drops the packets) or no route to the host"
        ).format(where=format_address(host, port), seconds=seconds)
    )


# ---- the command line ----------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = cli.parser(
        "trio-echo-client",
        N_(
            "Connects to an echo server, sends each line of standard input, and prints the echo "
            "on standard output. The line `exit` or the end of input ends the session. Events are "
            "explained on stderr."
        ),
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help=N_("server name or address"))
    parser.add_argument(
        "--port", type=cli.port_number, default=DEFAULT_PORT, help=N_("server port")
    )
    parser.add_argument(
        "--connect-timeout",
        type=cli.positive_float,
        default=DEFAULT_CONNECT_TIMEOUT,
        help=N_("seconds to wait for the connection"),
    )
    parser.add_argument(
        "--exit-timeout",
        type=cli.non_negative_float,
        default=DEFAULT_EXIT_TIMEOUT,
        help=N_("after sending `exit`, seconds to wait for the server to close"),
    )
    parser.add_argument(
        "--close-timeout",
        type=cli.positive_float,
        default=DEFAULT_CLOSE_TIMEOUT,
        help=N_(
            "after the end of input, seconds of silence from the server before giving up "
            "waiting for the rest of the echo and for its close"
        ),
    )
    add_tls_options(parser)
    add_proxy_options(parser)
    _add_udp_options(parser)
    add_websocket_options(parser)
    cli.add_log_options(
        parser, quiet_help=N_("leave out the per-data events `sent` and `received`")
    )
    return parser


def add_websocket_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(N_("WebSocket"))
    group.add_argument(
        "--websocket",
        action="store_true",
        help=N_(
            "speak WebSocket (wss with --tls) to the server's HTTP port (--http): each line "
            "one message"
        ),
    )
    group.add_argument(
        "--info",
        action="store_true",
        help=N_(
            "ask the server's HTTP port (--http, or --metrics) which server it is and what it "
            "sees of this client (GET /info), print the answer, and exit"
        ),
    )
    group.add_argument(
        "--ws-path",
        default="/ws",
        metavar="PATH",
        help=N_("the WebSocket's path on the server (default: %(default)s)"),
    )


def _add_udp_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("UDP")
    group.add_argument(
        "--udp",
        action="store_true",
        help=N_(
            "send datagrams instead of a TCP stream: each line one datagram, each echo "
            "awaited; status 0 only if every datagram came back"
        ),
    )
    group.add_argument(
        "--datagram-size",
        type=cli.positive_int,
        default=DEFAULT_DATAGRAM_SIZE,
        help=N_("the most bytes per datagram: longer lines, and input without newlines, are cut"),
    )
    group.add_argument(
        "--udp-timeout",
        type=cli.positive_float,
        default=DEFAULT_UDP_TIMEOUT,
        help=N_("seconds to wait for each echo before sending the datagram again"),
    )
    group.add_argument(
        "--udp-retries",
        type=_retries,
        default=DEFAULT_UDP_RETRIES,
        help=N_("times a datagram is sent again before it is counted lost"),
    )


def _retries(text: str) -> int:
    value = cli.non_negative_float(text)
    if value != int(value):
        raise argparse.ArgumentTypeError(
            _("{text!r} is not a whole number of retries").format(text=text)
        )
    return int(value)


def add_tls_options(parser: argparse.ArgumentParser) -> None:
    """The TLS options of a client (and of the check, which connects as one)."""
    group = parser.add_argument_group("TLS")
    group.add_argument(
        "--tls",
        action="store_true",
        help=N_(
            "speak TLS; the server's certificate is verified against the system's CAs and "
            "the host name, unless --tls-ca, --tls-fingerprint or --tls-insecure say otherwise"
        ),
    )
    group.add_argument(
        "--tls-ca", metavar="FILE", help=N_("trust this CA (PEM) instead of the system's")
    )
    group.add_argument(
        "--tls-fingerprint",
        metavar="sha256:HEX",
        type=_fingerprint,
        help=N_(
            "trust exactly the certificate with this fingerprint (self-signed ones), and "
            "check nothing else"
        ),
    )
    group.add_argument(
        "--tls-insecure",
        action="store_true",
        help=N_("check nothing: the connection is encrypted, but anyone on the way can be in it"),
    )
    group.add_argument(
        "--tls-server-name",
        metavar="NAME",
        help=N_("the name to send (SNI) and to verify (default: --host)"),
    )
    group.add_argument(
        "--tls-cert", metavar="FILE", help=N_("a client certificate to present (PEM)")
    )
    group.add_argument("--tls-key", metavar="FILE", help=N_("its key (PEM), if not in --tls-cert"))


def add_proxy_options(parser: argparse.ArgumentParser) -> None:
    """--send-proxy, to test a server behind a load balancer (as curl's --haproxy-protocol)."""
    group = parser.add_argument_group(N_("PROXY protocol"))
    group.add_argument(
        "--send-proxy",
        choices=("v1", "v2"),
        help=N_("begin the connection with a PROXY header, as a load balancer would"),
    )
    group.add_argument(
        "--proxy-source",
        metavar="ADDR:PORT",
        type=_address,
        help=N_("the client the header claims (default: this connection's own address)"),
    )


def _address(text: str) -> tuple[str, int]:
    host, _colon, port = text.rpartition(":")
    try:
        address = str(ipaddress.ip_address(host.strip("[]")))
        number = int(port)
        if not 0 <= number <= 65535:
            raise ValueError(port)
    except ValueError:
        raise argparse.ArgumentTypeError(
            _("{text!r} is not ADDRESS:PORT").format(text=text)
        ) from None
    return address, number


_address.__name__ = "address"


async def send_proxy_header(
    sock: trio.SocketStream, version: str, source: tuple[str, int] | None
) -> None:
    """The PROXY header a load balancer would send for this connection (or for `source`)."""
    local = sock.socket.getsockname()
    peer = sock.socket.getpeername()
    claimed = source or (str(local[0]), int(local[1]))
    destination = (str(peer[0]), int(peer[1]))
    if ":" in claimed[0] and ":" not in destination[0]:  # one family in a header
        destination = ("::ffff:" + destination[0], destination[1])
    from trio_echo import proxy_header

    build = proxy_header.build_v1 if version == "v1" else proxy_header.build_v2
    await sock.send_all(build(claimed, destination))


def _fingerprint(text: str) -> str:
    from trio_echo import tls

    try:
        return tls.parse_fingerprint(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_fingerprint.__name__ = "fingerprint"


def client_tls_settings(args: argparse.Namespace) -> tls.ClientTls | None:
    """The client's TLS from its options (None without --tls); `cli.Fatal` for bad files."""
    if not args.tls:
        return None
    from trio_echo import tls

    try:
        return tls.client_tls(
            ca_file=args.tls_ca,
            pinned=args.tls_fingerprint,
            insecure=args.tls_insecure,
            server_name=args.tls_server_name,
            cert_file=args.tls_cert,
            key_file=args.tls_key,
        )
    except tls.TlsFailed as exc:
        raise cli.Fatal(str(exc)) from None


def check_client_tls_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    cli.check_tls_options(parser, args)
    trusts = [args.tls_ca is not None, args.tls_fingerprint is not None, args.tls_insecure]
    if sum(trusts) > 1:
        parser.error(_("give one of --tls-ca, --tls-fingerprint and --tls-insecure"))


async def _run(args: argparse.Namespace) -> int:
    async with cli.open_log(args) as log:
        return await _connect_and_run(args, log.emit)


async def _run_udp(args: argparse.Namespace, emit: Emit) -> int:
    from trio_echo import udp_client

    emit(Connecting(host=args.host, port=args.port))
    where = format_address(args.host, args.port)
    try:
        infos = await trio.socket.getaddrinfo(args.host, args.port, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise ConnectFailed(
            "resolve",
            _("cannot resolve host {host!r}: {error}").format(
                host=args.host, error=cli.os_error_text(exc)
            ),
        ) from None
    family, kind, proto, _name, address = infos[0]
    with trio.socket.socket(family, kind, proto) as sock:
        await sock.connect(address)  # a default peer, and ICMP errors reported to us
        local, peer = sock.getsockname(), sock.getpeername()
        emit(
            ConnectedTo(
                local=format_address(*local[:2]),
                peer=format_address(*peer[:2]),
                transport="udp",
                end_of_input=capabilities.end_of_input_keys(),
            )
        )
        refused = False
        async with stdio.open_output(sys.stdout.fileno()) as sink:
            session = udp_client.UdpSession(
                sock,
                sink,
                emit=emit,
                data_events=not args.quiet,
                timeout=args.udp_timeout,
                retries=args.udp_retries,
            )
            try:
                await session.run(stdio.open_input(sys.stdin.fileno()), args.datagram_size)
            except ConnectionRefusedError:
                refused = True
        ended = _udp_ended(session.tally, refused)
        emit(ended)
    if refused:
        raise cli.Fatal(
            _(
                "connection refused by {where} over UDP: nothing listens on that UDP "
                "port there (the host answered with ICMP port unreachable)"
            ).format(where=where)
        )
    return 0 if ended.reason == "echoed" else cli.EXIT_FAILURE


def _udp_ended(tally: udp_client.UdpTally, refused: bool) -> UdpSessionEnded:
    low, mean, high = tally.rtt()
    return UdpSessionEnded(
        reason="refused" if refused else "lost" if tally.lost else "echoed",
        sent=tally.sent,
        echoed=tally.echoed,
        lost=tally.lost,
        duplicated=tally.duplicated,
        reordered=tally.reordered,
        rtt_min=low,
        rtt_avg=mean,
        rtt_max=high,
    )


async def _secure_or_fail(
    sock: trio.SocketStream, settings: tls.ClientTls, args: argparse.Namespace, emit: Emit
) -> trio.SSLStream[tls.LingeringTransport]:
    """The TLS layer over the connection, reported; `cli.Fatal` if it cannot be had."""
    from trio_echo import tls

    try:
        with trio.fail_after(args.connect_timeout):
            stream, seen = await secure(sock, settings, args.host, args.port)
    except trio.TooSlowError:
        await sock.aclose()
        raise cli.Fatal(
            _(
                "no TLS handshake with {where} within {connect_timeout:g} s: the "
                "server does not answer TLS ({drop_tls})"
            ).format(
                where=format_address(args.host, args.port),
                connect_timeout=args.connect_timeout,
                drop_tls=_(tls.DROP_TLS),
            )
        ) from None
    except tls.TlsFailed as exc:
        await sock.aclose()
        raise cli.Fatal(
            _("TLS with {where} failed: {exc}").format(
                where=format_address(args.host, args.port), exc=exc
            )
        ) from None
    emit(
        TlsSecured(
            version=str(stream.version()),
            cipher=(stream.cipher() or ("",))[0],
            subject=seen.subject,
            issuer=seen.issuer,
            not_after=seen.not_after,
            fingerprint=seen.fingerprint,
            trust=settings.trust,
        )
    )
    return stream


async def _ask_info(stream: trio.abc.Stream, args: argparse.Namespace) -> bytes:
    """GET /info on the connection: the body, or `cli.Fatal` saying what came instead."""
    import h11

    http = h11.Connection(h11.CLIENT)
    request = h11.Request(
        method="GET", target="/info", headers=[("Host", args.host), ("Connection", "close")]
    )
    body = b""
    status = 0
    async with stream:
        with trio.fail_after(args.connect_timeout):
            await stream.send_all(http.send(request) + (http.send(h11.EndOfMessage()) or b""))
            while True:
                try:
                    event = http.next_event()
                except h11.RemoteProtocolError:
                    event = None
                if event is None or isinstance(event, h11.ConnectionClosed):
                    break
                if event is h11.NEED_DATA:
                    http.receive_data(bytes(await stream.receive_some(65536)))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    body += bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    break
    if status != 200:
        where = format_address(args.host, args.port)
        raise cli.Fatal(
            _("no /info at {where}: is it the --http or --metrics port of trio-echo?").format(
                where=where
            )
        )
    return body


async def _upgrade_or_fail(stream: trio.abc.Stream, args: argparse.Namespace) -> trio.abc.Stream:
    """The WebSocket layer over the connection; `cli.Fatal` saying why if it is refused."""
    from trio_echo.rendering import say
    from trio_echo.websocket_client import WebSocketRefused, open_websocket

    where = format_address(args.host, args.port)
    try:
        with trio.fail_after(args.connect_timeout):
            return await open_websocket(stream, args.host, args.ws_path)
    except trio.TooSlowError:
        await stream.aclose()
        raise cli.Fatal(
            _(
                "no WebSocket upgrade from {where} within {seconds:g} s: is it the --http port?"
            ).format(where=where, seconds=args.connect_timeout)
        ) from None
    except (WebSocketRefused, trio.BrokenResourceError) as exc:
        await stream.aclose()
        why = say(exc.words) if isinstance(exc, WebSocketRefused) else str(exc)
        raise cli.Fatal(
            _("no WebSocket at {where}{path}: {why}").format(
                where=where, path=args.ws_path, why=why
            )
        ) from None


async def _connect_and_run(args: argparse.Namespace, emit: Emit) -> int:
    if args.udp:
        return await _run_udp(args, emit)
    settings = client_tls_settings(args)  # bad files are said before connecting
    emit(Connecting(host=args.host, port=args.port))
    try:
        with trio.fail_after(args.connect_timeout):
            sock = await connect(args.host, args.port)
    except trio.TooSlowError:
        raise timed_out(args.host, args.port, args.connect_timeout) from None
    local = sock.socket.getsockname()
    peer = sock.socket.getpeername()
    emit(
        ConnectedTo(
            local=format_address(*local[:2]),
            peer=format_address(*peer[:2]),
            transport="websocket" if args.websocket else "tcp",
            end_of_input=capabilities.end_of_input_keys(),
        )
    )
    if args.send_proxy:
        await send_proxy_header(sock, args.send_proxy, args.proxy_source)
    stream: trio.abc.Stream = sock
    if settings is not None:
        stream = await _secure_or_fail(sock, settings, args, emit)
    if args.info:
        sys.stdout.buffer.write(await _ask_info(stream, args))
        sys.stdout.flush()
        return 0
    if args.websocket:
        stream = await _upgrade_or_fail(stream, args)
    async with stream, stdio.open_output(sys.stdout.fileno()) as sink:
        reason = await run_session(
            stream,
            stdio.open_input(sys.stdin.fileno()),
            sink,
            emit=emit,
            data_events=not args.quiet,
            exit_timeout=args.exit_timeout,
            close_timeout=args.close_timeout,
        )
    return 0 if reason in CLEAN_ENDS else cli.EXIT_FAILURE


def main(argv: Sequence[str] | None = None) -> None:
    i18n.setup(argv)  # before the parser: its help is in the chosen language
    parser = _parser()
    args = parser.parse_args(argv)
    check_client_tls_options(parser, args)
    if args.udp and args.websocket:
        parser.error(_("--websocket is over TCP: it cannot go with --udp"))
    if args.udp and (args.tls or args.send_proxy):
        parser.error(_("--tls and --send-proxy are for TCP: they cannot go with --udp"))
    if args.proxy_source and not args.send_proxy:
        parser.error(_("--proxy-source needs --send-proxy"))
    where = format_address(args.host, args.port)
    sys.exit(cli.run_async(partial(_run, args), "trio-echo-client", where))


if __name__ == "__main__":
    main()
