"""Check an echo server that already runs somewhere, and say what works and what does not.

Each probe is small and independent (its own connection), so that one failure does not
blur the next, and each failure comes with a diagnosis a user can act on: the name does not
resolve; connection refused; timed out (probably filtered); the echo is wrong, short or late.
`scripts/remote_check.sh HOST PORT` is a thin front to this module.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import socket
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import partial
from typing import Final

import trio

from trio_echo import cli, client, i18n, tls
from trio_echo.events import format_address
from trio_echo.i18n import N_, _, ngettext
from trio_echo.probes import Probe, ProbeFailed, Report, Status, payload_without_exit, resolve
from trio_echo.udp_check import UdpChecker

DEFAULT_TIMEOUT: Final = 5.0
EXPIRY_WARNING_DAYS: Final = 14
DEFAULT_PINGS: Final = 10
MEBIBYTE: Final = 1 << 20
UTF8_TEXT: Final = "héllo wörld, ✓ 日本語, ελληνικά, 🙂\n".encode()


def _ms(seconds: float) -> str:
    return _("{value:.3f} ms").format(value=seconds * 1000)


@dataclass
class Checker:
    host: str
    port: int
    timeout: float = DEFAULT_TIMEOUT
    pings: int = DEFAULT_PINGS
    address: tuple[str, int] | None = None
    tls_settings: tls.ClientTls | None = None  # with --tls
    send_proxy: str | None = None  # "v1" or "v2": a PROXY header first, as a balancer would
    proxy_source: tuple[str, int] | None = None

    @property
    def where(self) -> str:
        return format_address(self.host, self.port)

    # ---- connection ----------------------------------------------------------------------

    async def resolve(self) -> str:
        _name, self.address, addresses = await resolve(
            self.host, self.port, socket.SOCK_STREAM, self.timeout
        )
        return addresses

    async def connect(self) -> trio.abc.Stream:
        """A connection for a probe: TCP, and TLS over it with --tls."""
        stream = await self.connect_tcp()
        if self.tls_settings is None:
            return stream
        secured, _seen = await self.secure(stream)
        return secured

    async def secure(
        self, stream: trio.SocketStream
    ) -> tuple[trio.SSLStream[tls.LingeringTransport], tls.ServerCertificate]:
        assert self.tls_settings is not None
        try:
            with trio.fail_after(self.timeout):
                return await client.secure(stream, self.tls_settings, self.host, self.port)
        except trio.TooSlowError:
            await stream.aclose()
            raise ProbeFailed(
                _(
                    "no TLS handshake within {timeout:g} s: the server does not answer TLS "
                    "({drop_tls})"
                ).format(timeout=self.timeout, drop_tls=_(tls.DROP_TLS))
            ) from None
        except tls.TlsFailed as failed:
            await stream.aclose()
            raise ProbeFailed(str(failed)) from None

    async def connect_tcp(self) -> trio.SocketStream:
        try:
            with trio.fail_after(self.timeout):
                stream = await client.connect(self.host, self.port)
                if self.send_proxy:
                    await client.send_proxy_header(stream, self.send_proxy, self.proxy_source)
                return stream
        except trio.TooSlowError:
            timed_out = client.timed_out(self.host, self.port, self.timeout)
            raise ProbeFailed(str(timed_out), cause="filtered") from None
        except client.ConnectFailed as failed:
            if failed.kind == "refused":
                diagnosis = await self._refused_diagnosis(str(failed))
                raise ProbeFailed(diagnosis, cause="refused") from None
            raise ProbeFailed(str(failed), cause=failed.kind) from None

    async def _refused_diagnosis(self, message: str) -> str:
        if self.address is not None and await self._loopback_only_here():
            message += _(
                ". A server on this machine listens on 127.0.0.1:{port} only: start it with "
                "--host 0.0.0.0 (or ::) to accept other machines"
            ).format(port=self.port)
        return message

    async def _loopback_only_here(self) -> bool:
        """Whether the target is one of this machine's own addresses and a server listens
        on the same port on loopback: then it was started for local clients only."""
        assert self.address is not None
        family = socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET
        if self.address[0].startswith("127.") or self.address[0] == "::1":
            return False
        with trio.socket.socket(family, socket.SOCK_STREAM) as probe:
            try:
                await probe.bind((self.address[0], 0))
            except OSError:
                return False  # not an address of this machine
        loopback = "127.0.0.1" if family == socket.AF_INET else "::1"
        with trio.move_on_after(self.timeout) as scope:
            try:
                stream = await trio.open_tcp_stream(loopback, self.port)
            except OSError:
                return False
            await stream.aclose()
        return not scope.cancelled_caught

    # ---- echo ----------------------------------------------------------------------------

    # ---- TLS -----------------------------------------------------------------------------

    async def tls_probe(self) -> tuple[Status, str]:
        """The handshake, timed, and what the certificate says; WARN when it expires soon."""
        assert self.tls_settings is not None
        tls.load_x509_support()
        stream = await self.connect_tcp()
        began = trio.current_time()
        secured, seen = await self.secure(stream)
        took = trio.current_time() - began
        version, cipher = secured.version(), (secured.cipher() or ("",))[0]
        await secured.aclose()
        days = seen.days_left()
        if days < 0:
            raise ProbeFailed(
                _("the certificate expired on {not_after}: {error}").format(
                    not_after=seen.not_after, error=seen.describe()
                )
            )
        trust = {
            "ca": _("verified against the trusted CAs and the name"),
            "fingerprint": _("the pinned fingerprint matches"),
            "insecure": _("NOT VERIFIED (--tls-insecure)"),
        }[self.tls_settings.trust]
        figure = _(
            "handshake in {ms}, {version}, {cipher}; {subject}, names {names}, issued by "
            "{issuer}; expires {not_after} (in {days:.0f} days); {trust}"
        ).format(
            ms=_ms(took), version=version, cipher=cipher, subject=seen.subject,
            names=", ".join(seen.names) or _("none"), issuer=seen.issuer,
            not_after=seen.not_after, days=days, trust=trust,
        )  # fmt: skip
        if days < EXPIRY_WARNING_DAYS:
            return "WARN", _(
                "the certificate expires in {days:.1f} days: renew it; {figure}"
            ).format(days=days, figure=figure)
        return "PASS", figure

    async def speaks_tls(self) -> str | None:
        """If the port answers a TLS handshake, a diagnosis that says so; else None."""
        settings = tls.client_tls(insecure=True)
        stream = await self.connect_tcp()
        with trio.move_on_after(self.timeout):
            try:
                secured, seen = await tls.client_handshake(
                    tls.LingeringTransport(stream, 0), settings, self.host
                )
            except tls.TlsFailed:
                await stream.aclose()
                return None
            version = secured.version()
            await trio.aclose_forcefully(secured)
            return _(
                "this port speaks TLS ({version}; its certificate: {subject}, issued "
                "by {issuer}): check it with --tls (add --tls-fingerprint "
                "{fingerprint} to trust this very certificate)"
            ).format(
                version=version,
                subject=seen.subject,
                issuer=seen.issuer,
                fingerprint=seen.fingerprint,
            )
        await stream.aclose()
        return None

    # ---- echo ----------------------------------------------------------------------------

    async def round_trip(self, stream: trio.abc.Stream, payload: bytes) -> float:
        """Send `payload` and read it back, concurrently; the time taken, or ProbeFailed."""
        got = bytearray()
        began = trio.current_time()

        async def send() -> None:
            await stream.send_all(payload)

        ended = _("the server closed")
        with trio.move_on_after(self.timeout) as scope:
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(send)
                    while len(got) < len(payload):
                        data = await stream.receive_some(65536)
                        if not data:
                            break
                        got += data
            except* trio.BrokenResourceError:
                ended = _("the connection was reset")
        took = trio.current_time() - began
        if got == payload:
            return took
        if got != payload[: len(got)]:
            first = next(i for i, (a, b) in enumerate(zip(got, payload, strict=False)) if a != b)
            raise ProbeFailed(
                _(
                    "wrong echo: differs from what was sent at byte {first} (this is not "
                    "an echo server, or something on the way changes the data)"
                ).format(first=first)
            )
        if scope.cancelled_caught:
            raise ProbeFailed(
                _(
                    "late or short echo: {len} of {len2} bytes came back within {timeout:g} s"
                ).format(len=len(got), len2=len(payload), timeout=self.timeout)
            )
        raise ProbeFailed(
            _("short echo: {ended} after {len} of {len2} bytes").format(
                ended=ended, len=len(got), len2=len(payload)
            )
        )

    async def echo_probe(self, payload: bytes) -> str:
        async with await self.connect() as stream:
            took = await self.round_trip(stream, payload)
        return _("{len} bytes back intact in {ms}").format(len=len(payload), ms=_ms(took))

    async def latency(self) -> str:
        async with await self.connect() as stream:
            times = [await self.round_trip(stream, b"ping %d\n" % i) for i in range(self.pings)]
        mean = statistics.fmean(times)
        mdev = math.sqrt(statistics.fmean([(t - mean) ** 2 for t in times]))
        figures = "/".join(f"{value * 1000:.3f}" for value in (min(times), mean, max(times), mdev))
        return _("rtt min/avg/max/mdev = {figures} ms").format(figures=figures)

    async def exit_command(self) -> tuple[Status, str]:
        async with await self.connect() as stream:
            await self.round_trip(stream, b"exit\n")
            with trio.move_on_after(min(self.timeout, 2.0)):
                try:
                    rest = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    rest = b""
                if not rest:
                    return "PASS", _("the server ended the session after `exit`")
                raise ProbeFailed(
                    _("the server sent {len} more bytes after `exit`").format(len=len(rest))
                )
        return "SKIP", (
            _(
                "the server kept the session open after `exit`: a plain RFC 862 echo server "
                "(not a failure)"
            )
        )

    # ---- the whole check -----------------------------------------------------------------

    async def run(self) -> Report:
        report = Report(self.host, self.port)
        probe = report.probe

        async def connect_time() -> str:
            began = trio.current_time()
            stream = await self.connect_tcp()
            took = trio.current_time() - began
            await stream.aclose()
            return _("connected in {ms}").format(ms=_ms(took))

        def skip_the_rest(names: list[str], why: str) -> Report:
            for name in names:
                report.probes.append(
                    Probe(name, "SKIP", diagnosis=_("not run: {why}").format(why=why))
                )
            return report

        echo_probes: list[tuple[str, bytes]] = [
            ("short line", b"hello, echo\n"),
            *[(f"line of {n} bytes", b"x" * (n - 1) + b"\n") for n in (1023, 1024, 1025)],
            ("1 MiB binary", payload_without_exit(MEBIBYTE, seed=862)),
            ("UTF-8 text", UTF8_TEXT),
        ]
        later = [name for name, _ in echo_probes] + [f"latency ({self.pings} pings)", "exit"]
        if self.tls_settings is not None:
            later.insert(0, "tls")
        if not await probe("resolve", self.resolve):
            return skip_the_rest(["connect", *later], _("no connection"))
        if not await probe("connect", connect_time):
            return skip_the_rest(later, _("no connection"))
        if self.tls_settings is not None:
            try:
                status, figure = await self.tls_probe()
                report.probes.append(Probe("tls", status, figure))
            except (ProbeFailed, OSError, trio.BrokenResourceError) as exc:
                report.probes.append(Probe("tls", "FAIL", diagnosis=cli.describe(exc)))
                return skip_the_rest(later[1:], _("no TLS session"))
        for name, payload in echo_probes:
            passed = await probe(name, partial(self.echo_probe, payload))
            if not passed and name == echo_probes[0][0] and self.tls_settings is None:
                hint = await self.speaks_tls()
                if hint is not None:
                    report.probes[-1].diagnosis = hint
                    return skip_the_rest(later[1:], _("the port speaks TLS"))
        await probe(f"latency ({self.pings} pings)", self.latency)
        try:
            status, figure = await self.exit_command()
            report.probes.append(Probe("exit", status, figure, required=False))
        except (ProbeFailed, OSError, trio.BrokenResourceError) as exc:
            report.probes.append(Probe("exit", "FAIL", diagnosis=cli.describe(exc)))
        return report


# The probes' names, for people; JSON keeps the names above, which machines read.
_TITLES: Final = {
    "resolve": N_("resolve"),
    "connect": N_("connect"),
    "tls": N_("tls"),
    "short line": N_("short line"),
    "1 MiB binary": N_("1 MiB binary"),
    "UTF-8 text": N_("UTF-8 text"),
    "exit": N_("exit"),
    "udp round trip": N_("udp round trip"),
    "path MTU": N_("path MTU"),
}
_NUMBERED: Final = (
    (re.compile(r"line of (\d+) bytes"), N_("line of {n} bytes")),
    (re.compile(r"latency \((\d+) pings\)"), N_("latency ({n} pings)")),
    (re.compile(r"datagram of (\d+) bytes"), N_("datagram of {n} bytes")),
    (re.compile(r"loss and rtt \((\d+) datagrams\)"), N_("loss and rtt ({n} datagrams)")),
)
# The results, for people (the JSON keeps the English words).
RESULTS: Final = {"PASS": N_("PASS"), "FAIL": N_("FAIL"), "WARN": N_("WARN"), "SKIP": N_("SKIP")}


def title(name: str) -> str:
    """A probe's name in the chosen language."""
    if name in _TITLES:
        return _(_TITLES[name])
    for pattern, text in _NUMBERED:
        if found := pattern.fullmatch(name):
            return _(text).format(n=found.group(1))
    return name


def render_table(report: Report) -> str:
    target = format_address(report.host, report.port)
    titles = [title(p.name) for p in report.probes]
    head = (_("PROBE"), _("RESULT"), _("DETAIL"))
    width = max(len(t) for t in [*titles, head[0]])
    status_width = max(len(_(s)) for s in [*RESULTS.values(), head[1]])
    lines = [
        _("trio-echo check of {where}").format(where=target),
        f"{head[0]:<{width}}  {head[1]:<{status_width}}  {head[2]}",
    ]
    for p, name in zip(report.probes, titles, strict=True):
        detail = p.figure if p.status == "PASS" else p.diagnosis or p.figure
        note = "" if p.required else _(" (optional)")
        status = _(RESULTS[p.status])
        lines.append(f"{name:<{width}}  {status:<{status_width}}  {detail}{note}")
    failed = [name for p, name in zip(report.probes, titles, strict=True) if p.status == "FAIL"]
    skipped = sum(p.status == "SKIP" and p.required for p in report.probes)
    if report.ok:
        lines.append(_("result: every required probe passed"))
    else:
        lines.append(
            ngettext(
                "result: FAILED: {failed} ({n} required probe not run)",
                "result: FAILED: {failed} ({n} required probes not run)",
                skipped,
            ).format(failed=", ".join(failed), n=skipped)
        )
    return "\n".join(lines)


def render_json(report: Report) -> str:
    return json.dumps(
        {
            "host": report.host,
            "port": report.port,
            "ok": report.ok,
            "probes": [asdict(p) for p in report.probes],
        }
    )


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
