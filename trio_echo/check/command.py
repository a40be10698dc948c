"""`trio-echo-check` (`python -m trio_echo.check`, `scripts/remote_check.sh HOST PORT`): check
an echo server that already runs somewhere, over TCP or UDP, here or through `--ssh`, and
say what works and what does not; exit status 0 when every required probe passed."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from functools import partial
from typing import Final

import trio

from trio_echo import cli, client, i18n
from trio_echo.check.probes import Report
from trio_echo.check.reach import DEFAULT_TIMEOUT
from trio_echo.check.report import render_json, render_table
from trio_echo.check.tcp import DEFAULT_PINGS, Checker
from trio_echo.check.udp import UdpChecker
from trio_echo.events import format_address
from trio_echo.i18n import N_, _


def _parser() -> argparse.ArgumentParser:
    parser = cli.parser(
        "trio-echo-check",
        N_(
            "Checks an echo server that already runs: name resolution, connect, echoes of "
            "several sizes, latency and the `exit` command, each PASS/FAIL/SKIP with a figure "
            "or a diagnosis. Exit status 0 when every required probe passed."
        ),
    )
    parser.add_argument("host", nargs="?", help=N_("server name or address"))
    parser.add_argument("port", nargs="?", type=cli.port_number, help=N_("server port"))
    parser.add_argument(
        "--ssh",
        metavar="USER@HOST",
        help=N_(
            "start a trio-echo server on HOST over ssh (on a free port), check it from here, "
            "then stop it; HOST and PORT are then not given"
        ),
    )
    parser.add_argument(
        "--ssh-option",
        action="append",
        default=[],
        metavar="OPTION",
        help=N_("an option for ssh, e.g. --ssh-option=-i --ssh-option=KEY (repeatable)"),
    )
    parser.add_argument(
        "--remote-python",
        default="python3",
        help=N_("the Python on the remote host that has trio_echo installed"),
    )
    parser.add_argument("--json", action="store_true", help=N_("print the report as JSON"))
    parser.add_argument(
        "--timeout",
        type=cli.positive_float,
        default=DEFAULT_TIMEOUT,
        help=N_("seconds each step may take"),
    )
    parser.add_argument(
        "--pings", type=cli.positive_int, default=DEFAULT_PINGS, help=N_("round trips to time")
    )
    client.add_tls_options(parser)
    client.add_proxy_options(parser)
    client.add_websocket_options(parser)
    parser.add_argument(
        "--udp",
        action="store_true",
        help=N_("check the UDP echo instead: datagrams of several sizes, loss and RTT, path MTU"),
    )
    return parser


# The remote side of --ssh: run the server, and stop it (SIGTERM, then wait) as soon as our
# end of the ssh connection closes, whether we close it or the connection breaks.
REMOTE_SERVER: Final = (
    "{python} -m trio_echo.server --host 0.0.0.0 --port 0 --log-format json --quiet{tls} & "
    "pid=$!; "
    "trap 'kill -TERM $pid 2>/dev/null; wait $pid' EXIT; read -r _"
)


async def _check_over_ssh(args: argparse.Namespace) -> Report:
    """Start a server over ssh, check it, stop it, and leave nothing running there."""
    destination: str = args.ssh
    host = destination.rpartition("@")[2]
    command = REMOTE_SERVER.format(python=args.remote_python, tls=" --tls" if args.tls else "")
    argv = ["ssh", "-o", "BatchMode=yes", *args.ssh_option, destination, command]
    process = await trio.lowlevel.open_process(
        argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert process.stdin is not None
    assert process.stderr is not None
    try:
        port, fingerprint = await _remote_port(process.stderr, destination, args.timeout + 10)
        if args.tls and not (args.tls_ca or args.tls_fingerprint or args.tls_insecure):
            # Its ephemeral certificate, pinned: the fingerprint came over ssh, which we trust.
            args.tls_fingerprint = fingerprint
        checker = Checker(host, port, timeout=args.timeout, pings=args.pings)
        checker.tls_settings = client.client_tls_settings(args)
        report = await checker.run()
        await process.stdin.aclose()  # the remote shell stops its server
        with trio.move_on_after(args.timeout + 10):
            await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
    return report


async def _remote_port(
    stderr: trio.abc.ReceiveStream, where: str, patience: float
) -> tuple[int, str | None]:
    """The port (and the TLS fingerprint) from the remote server's `listening` event."""
    buffer, said = b"", []
    with trio.move_on_after(patience):
        while chunk := await stderr.receive_some(65536):
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                try:
                    record = json.loads(line)
                except ValueError:
                    said.append(line.decode(errors="replace"))
                    continue
                if record.get("event") == "server.listening":
                    return int(record["port"]), record.get("tls_fingerprint")
    what = "; ".join(said[-3:]) or "nothing"
    raise cli.Fatal(
        _("could not start a server on {where} over ssh (it said: {what})").format(
            where=where, what=what
        )
    )


async def _run(args: argparse.Namespace) -> int:
    if args.ssh:
        report = await _check_over_ssh(args)
    elif args.udp:
        udp = UdpChecker(args.host, args.port, timeout=args.timeout, pings=args.pings)
        report = await udp.run()
    else:
        settings = client.client_tls_settings(args)
        checker = Checker(
            args.host, args.port, timeout=args.timeout, pings=args.pings, tls_settings=settings
        )
        checker.send_proxy, checker.proxy_source = args.send_proxy, args.proxy_source
        checker.websocket = args.ws_path if args.websocket else None
        report = await checker.run()
    print(render_json(report) if args.json else render_table(report))
    return 0 if report.ok else cli.EXIT_FAILURE


def main(argv: Sequence[str] | None = None) -> None:
    i18n.setup(argv)  # before the parser: its help is in the chosen language
    parser = _parser()
    args = parser.parse_args(argv)
    if args.ssh is None and (args.host is None or args.port is None):
        parser.error(_("give HOST and PORT, or --ssh USER@HOST"))
    if args.ssh is not None and args.host is not None:
        parser.error(_("with --ssh, the host comes from USER@HOST: give no HOST or PORT"))
    client.check_client_tls_options(parser, args)
    if args.udp and (args.tls or args.ssh):
        parser.error(
            _("--udp checks a UDP echo at HOST PORT: it goes with neither --tls nor --ssh")
        )
    where = args.ssh or format_address(args.host, args.port)
    sys.exit(cli.run_async(partial(_run, args), "trio-echo-check", where))


if __name__ == "__main__":
    main()
