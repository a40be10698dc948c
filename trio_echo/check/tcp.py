"""The TCP check: each probe small and independent (its own connection), so that one failure
does not blur the next, and each failure with a diagnosis a user can act on: the name does not
resolve; connection refused; timed out (probably filtered); the echo is wrong, short or late.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from functools import partial
from typing import Final

import trio

from trio_echo import cli, tls
from trio_echo.check.probes import Probe, ProbeFailed, Report, Status, payload_without_exit
from trio_echo.check.reach import Target
from trio_echo.i18n import _

EXPIRY_WARNING_DAYS: Final = 14
DEFAULT_PINGS: Final = 10
MEBIBYTE: Final = 1 << 20
UTF8_TEXT: Final = "héllo wörld, ✓ 日本語, ελληνικά, 🙂\n".encode()


def _ms(seconds: float) -> str:
    return _("{value:.3f} ms").format(value=seconds * 1000)


@dataclass
class Checker(Target):
    """The probes of one TCP check, in the order `run` gives them."""

    pings: int = DEFAULT_PINGS

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

    # ---- WebSocket -----------------------------------------------------------------------

    async def websocket_probe(self) -> str:
        """The upgrade alone, timed; the diagnoses are `upgrade`'s."""
        tcp = await self.connect_tcp()
        stream: trio.abc.Stream = tcp
        if self.tls_settings is not None:
            stream, _seen = await self.secure(tcp)
        began = trio.current_time()
        async with await self.upgrade(stream):
            took = trio.current_time() - began
        return _("upgraded to a WebSocket at {path} in {ms}").format(
            path=self.websocket, ms=_ms(took)
        )

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
        if got.startswith(payload):  # the echo, and more in the same reads
            raise ProbeFailed(
                _(
                    "the echo came back with {extra} bytes more than was sent (this is not "
                    "an echo server, or it adds to the data)"
                ).format(extra=len(got) - len(payload))
            )
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
        after_tls = later[1:] if self.tls_settings is not None else later
        if self.websocket is not None and not await probe("websocket", self.websocket_probe):
            hint = await self.speaks_tls() if self.tls_settings is None else None
            if hint is not None:
                report.probes[-1].diagnosis = hint
            return skip_the_rest(after_tls, _("no WebSocket"))
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
