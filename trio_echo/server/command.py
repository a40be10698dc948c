"""`trio-echo-server` (`python -m trio_echo.server`): the command line made into a
`ServerConfig`, the signals that stop it, systemd's readiness and status, `--workers`."""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from functools import partial
from typing import Final

import trio

from trio_echo import capabilities, cli, i18n, systemd, tls, workers
from trio_echo import udp as udp_module
from trio_echo.access import AccessRules
from trio_echo.events import Emit, format_address
from trio_echo.i18n import N_, _
from trio_echo.rendering import count_clients
from trio_echo.server.config import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_HOST,
    DEFAULT_MAX_MESSAGE,
    DEFAULT_METRICS_HOST,
    DEFAULT_PORT,
    DEFAULT_PROXY_TIMEOUT,
    DEFAULT_SHUTDOWN_TIMEOUT,
    HttpConfig,
    MetricsConfig,
    Network,
    ProxyConfig,
    ServerConfig,
    UdpConfig,
    connections_for,
)
from trio_echo.server.core import EchoServer

STATUS_SECONDS: Final = 1.0  # how often systemd's status line may change


def _parser() -> argparse.ArgumentParser:
    parser = cli.parser(
        "trio-echo-server",
        N_(
            "A TCP echo server: every byte a client sends comes back, until it sends the line "
            "`exit` or closes. Events are explained on stderr."
        ),
    )
    _add_echo_options(parser)
    _add_capacity_options(parser)
    cli.add_server_tls_options(parser)
    _add_proxy_options(parser)
    _add_udp_options(parser)
    _add_http_options(parser)
    _add_operator_options(parser)
    # Set by the supervisor for each worker it starts; not for people to type.
    parser.add_argument("--worker-id", type=cli.positive_int, help=argparse.SUPPRESS)
    cli.add_log_options(
        parser, quiet_help=N_("leave out the per-data events `received` and `sent`")
    )
    return parser


def _add_echo_options(parser: argparse.ArgumentParser) -> None:
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
        type=cli.chunk_size,
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


def _add_capacity_options(parser: argparse.ArgumentParser) -> None:
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
        help=N_(
            "close a client that sends nothing for this many seconds, whatever it owes (a "
            "PROXY header, a TLS handshake, a line), or that takes none of its echo for as "
            "long (default: never)"
        ),
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


def _add_proxy_options(parser: argparse.ArgumentParser) -> None:
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


def _add_udp_options(parser: argparse.ArgumentParser) -> None:
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


def _add_http_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(N_("HTTP: a page and the WebSocket echo"))
    group.add_argument(
        "--http",
        metavar="[HOST:]PORT",
        type=_host_port,
        help=N_(
            "also serve HTTP on this port (the host of --host unless given; 0 picks a free "
            "one): a page any browser can open at /, and a WebSocket echo at /ws (HTTPS and "
            "wss with --tls)"
        ),
    )
    group.add_argument(
        "--ws-max-message",
        type=cli.positive_int,
        default=DEFAULT_MAX_MESSAGE,
        metavar="BYTES",
        help=N_(
            "the largest WebSocket message, reassembled or inflated; past it the connection "
            "is closed with 1009 (default: %(default)s)"
        ),
    )


def _add_operator_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(N_("Running it as a service"))
    group.add_argument(
        "--metrics",
        metavar="[HOST:]PORT",
        type=_host_port,
        help=N_(
            "serve /metrics (Prometheus), /healthz, /readyz (503 once a drain or stop "
            "begins) and /info on this port (host 127.0.0.1 unless given; with --workers, "
            "worker N on PORT+N-1)"
        ),
    )
    group.add_argument(
        "--max-bytes",
        type=cli.positive_int,
        metavar="N",
        help=N_(
            "end a session once the client has sent N bytes (what it sent is echoed first; "
            "reason max_bytes); for public endpoints (default: no limit)"
        ),
    )
    group.add_argument(
        "--max-duration",
        type=cli.positive_float,
        metavar="SECONDS",
        help=N_(
            "end a session this long after it began, between two echoes (reason "
            "max_duration); for public endpoints (default: no limit)"
        ),
    )
    group.add_argument(
        "--allow",
        action="append",
        type=_network,
        default=[],
        metavar="CIDR",
        help=N_(
            "serve only clients in this network (repeatable; IPv4 or IPv6): TCP, TLS, UDP "
            "and --http alike, judged on the real client behind a trusted PROXY header"
        ),
    )
    group.add_argument(
        "--deny",
        action="append",
        type=_network,
        default=[],
        metavar="CIDR",
        help=N_(
            "turn away clients in this network (repeatable; it wins over --allow): closed "
            "at once with a `rejected` event (reason denied); datagrams dropped and counted"
        ),
    )
    group.add_argument(
        "--name",
        default=socket.gethostname(),
        help=N_("which server this is, in the START line, /info and the metrics "
                "(default: the host name, %(default)s)"),
    )  # fmt: skip


def _network(text: str) -> Network:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_network.__name__ = "CIDR"


def _host_port(text: str) -> tuple[str | None, int]:
    host, _colon, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(_("{text!r} is not [HOST:]PORT").format(text=text))
    return (host.strip("[]") or None), number


_host_port.__name__ = "[HOST:]PORT"


def _networks(text: str) -> tuple[Network, ...]:
    try:
        return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_networks.__name__ = "networks"


def server_config(
    args: argparse.Namespace, *, fd_limit: int | None, stop_signals: tuple[str, ...]
) -> ServerConfig:
    """The configuration the command line asks for, on a process with `fd_limit`."""
    default_connections = (
        capabilities.WINDOWS_CONNECTIONS if fd_limit is None else connections_for(fd_limit)
    )
    proxy = None
    if args.proxy_protocol:
        proxy = ProxyConfig(timeout=args.proxy_timeout, trusted=args.proxy_trusted)
    udp = None
    if args.udp:
        udp = UdpConfig(rate=args.udp_rate or None, allow_low_ports=args.udp_allow_low_ports)
    metrics = None
    if args.metrics is not None:
        # With --workers, one port a worker (PORT for worker 1, PORT+1 for worker 2...): each
        # worker's counts are its own, and Prometheus sums what it scrapes; a supervisor that
        # gathered them would be one more thing to fail while the workers run.
        host, port = args.metrics
        if port and args.worker_id is not None:
            port += args.worker_id - 1
        metrics = MetricsConfig(host=host or DEFAULT_METRICS_HOST, port=port)
    http = None
    if args.http is not None:
        http = HttpConfig(host=args.http[0], port=args.http[1], max_message=args.ws_max_message)
    return ServerConfig(
        host=args.host,
        port=args.port,
        chunk_size=args.chunk_size,
        exit_command=args.exit_command,
        shutdown_timeout=args.shutdown_timeout,
        drain_timeout=args.drain_timeout,
        max_connections=args.max_connections or default_connections,
        idle_timeout=args.idle_timeout,
        max_bytes=args.max_bytes,
        max_duration=args.max_duration,
        data_events=not args.quiet,
        reuse_port=args.worker_id is not None,
        tcp=args.tcp,
        tls=_server_tls(args),
        proxy=proxy,
        udp=udp,
        http=http,
        metrics=metrics,
        access=AccessRules(allow=tuple(args.allow), deny=tuple(args.deny)),
        name=args.name,
        fd_limit=fd_limit,
        stop_signals=stop_signals,
    )


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


async def _run(args: argparse.Namespace, argv: Sequence[str], early: Sequence[int]) -> int:
    if args.workers > 1:
        if not (args.tls and args.tls_cert is None):
            return await workers.supervise(args, argv, early)
        # One ephemeral certificate for all the workers: one fingerprint to pin.
        with tempfile.TemporaryDirectory(prefix="trio-echo-tls-") as directory:
            cert, key = tls.ephemeral_certificate(tls.ephemeral_names(args.host))
            files = ["--tls-cert", tls.write_private(directory, "cert.pem", cert)]
            files += ["--tls-key", tls.write_private(directory, "key.pem", key)]
            return await workers.supervise(args, [*argv, *files], early)
    async with cli.open_log(args, worker=args.worker_id) as log:
        await _serve(args, log.emit, early, dropped=lambda: log.dropped_total)
    return 0


async def _serve(
    args: argparse.Namespace,
    emit: Emit,
    early: Sequence[int] = (),
    *,
    dropped: Callable[[], int] | None = None,
) -> None:
    fd_limit = capabilities.raise_descriptor_limit()
    stop_signals = capabilities.stop_signals()
    config = server_config(
        args, fd_limit=fd_limit, stop_signals=tuple(known.code for known in stop_signals)
    )
    if config.tls is not None:
        sys.unraisablehook = tls.quieting_bad_server_names(sys.unraisablehook)
    server = EchoServer(config, emit=emit, inherited=systemd.listen_sockets())
    if dropped is not None:
        server.log_dropped = dropped
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
                for count, signum in enumerate(early):  # came while it was starting
                    if count == 0:
                        _stop(server, capabilities.signal_code(signum))
                    else:
                        server.abort()
            nursery.cancel_scope.cancel()  # the watchers have no reason to outlive it


def _stop(server: EchoServer, reason: str) -> None:
    systemd.notify("STOPPING=1")
    server.stop(reason)


async def _stop_on_signals(signals: AsyncIterator[int], server: EchoServer) -> None:
    first = True
    async for signum in signals:
        if first:
            _stop(server, capabilities.signal_code(signum))
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
            _stop(server, "supervisor")
            return


def main(argv: Sequence[str] | None = None, early_signals: Sequence[int] = ()) -> None:
    """The command. `early_signals`: stop signals that came before the server could take
    them (`__main__`), acted on once it is up."""
    i18n.setup(argv)  # before the parser: its help is in the chosen language
    argv = sys.argv[1:] if argv is None else argv
    parser = _parser()
    args = parser.parse_args(argv)
    _check(parser, args)
    run = partial(_run, args, argv, early_signals)
    sys.exit(cli.run_async(run, "trio-echo-server", N_("unexpected error")))


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse combinations of options that cannot work, with one line each."""
    cli.check_tls_options(parser, args)
    if not args.tcp and not args.udp:
        parser.error(_("--no-tcp needs --udp (a server must serve something)"))
    if args.tls and not args.tcp:
        parser.error(_("--tls is for TCP: it cannot go with --no-tcp"))
    if args.http is not None and args.http[1] == 0 and args.workers > 1:
        parser.error(
            _("--http 0 with --workers: give the HTTP port, so that every worker serves it")
        )
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
