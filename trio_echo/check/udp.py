"""`remote_check.sh HOST PORT --udp`: the check, over UDP.

The probes: a round trip; datagrams of 1, 512, 1,472 (the most that fits a 1,500-byte MTU
unfragmented), 8,192 and 65,507 bytes (the largest: both fragmented on any real link); loss
and RTT over `--pings` datagrams; and the path MTU, found with the don't-fragment bit set
(IP_MTU_DISCOVER): the largest datagram that comes back unfragmented. Each failure says what
it means: nothing back at all (filtered, or no server: refused when ICMP says so), small
datagrams back but fragmented ones not (IP fragments are dropped on the path), loss.
"""

from __future__ import annotations

import math
import socket
import statistics
from dataclasses import dataclass, field
from functools import partial
from typing import Final

import trio

from trio_echo import capabilities, cli, udp_client
from trio_echo.check.probes import Probe, ProbeFailed, Report, Status, payload_without_exit, resolve
from trio_echo.events import format_address
from trio_echo.i18n import _

SIZES: Final = (1, 512, 1472, 8192, 65507)
FITS_1500: Final = 1472  # 1,500 - 20 (IPv4) - 8 (UDP)
IPV4_OVERHEAD: Final = 28
IPV6_OVERHEAD: Final = 48
LOSS_FAILS: Final = 20.0  # % of pings lost that fails the check (any loss is a warning)
RETRIES: Final = 2


@dataclass
class UdpChecker:
    host: str
    port: int
    timeout: float = 2.0
    pings: int = 10
    address: tuple[str, int] | None = None
    family: int = socket.AF_INET
    cut: int | None = None  # the size a server cut a datagram to, when it did
    fits: int = FITS_1500  # the largest datagram that leaves here in one packet
    unanswered: set[int] = field(default_factory=set)  # sizes whose echo never came

    @property
    def overhead(self) -> int:
        return IPV4_OVERHEAD if self.family == socket.AF_INET else IPV6_OVERHEAD

    @property
    def where(self) -> str:
        return format_address(self.host, self.port)

    async def resolve(self) -> str:
        self.family, self.address, addresses = await resolve(
            self.host, self.port, socket.SOCK_DGRAM, self.timeout
        )
        return addresses

    async def _socket(self, *, dont_fragment: bool = False) -> trio.socket.SocketType:
        assert self.address is not None
        sock = trio.socket.socket(self.family, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        df = capabilities.dont_fragment()
        if self.family == socket.AF_INET and df is not None:
            # Either never fragment (the path MTU probe), or always may: a datagram larger
            # than the path takes is sent as fragments, as any UDP application's would be.
            sock.setsockopt(socket.IPPROTO_IP, df.option, df.on if dont_fragment else df.off)
        await sock.connect(self.address)  # ICMP errors come back to this socket
        return sock

    async def round_trip(
        self, sock: trio.socket.SocketType, payload: bytes, tries: int = RETRIES + 1
    ) -> float | None:
        """Send `payload` (up to `tries` times, within --timeout in all) until its echo comes
        back: the time of the round trip that worked, or None. ConnectionRefusedError if
        nobody listens; OSError EMSGSIZE if it cannot leave unfragmented."""
        patience = self.timeout / tries
        for _try in range(tries):
            began = trio.current_time()
            await sock.send(payload)
            with trio.move_on_after(patience):
                while (data := await udp_client.receive(sock)) != payload:
                    if data and len(data) < len(payload) and payload.startswith(data):
                        self.cut = len(data)
                        raise ProbeFailed(
                            _(
                                "the echo came back cut to {len} of {len2} bytes: the server (or "
                                "something on the way) reads datagrams into a smaller buffer"
                            ).format(len=len(data), len2=len(payload))
                        )
                return trio.current_time() - began
        return None

    # ---- the probes ----------------------------------------------------------------------

    async def first(self) -> str:
        with await self._socket() as sock:
            self.fits = (_route_mtu(sock) or 1500) - self.overhead
            try:
                took = await self.round_trip(sock, b"hello, echo\n")
            except ConnectionRefusedError:
                raise ProbeFailed(
                    _(
                        "refused: nothing listens on UDP port {port} at {where} (the host "
                        "answered with ICMP port unreachable)"
                    ).format(port=self.port, where=self.where),
                    cause="refused",
                ) from None
        if took is None:
            raise ProbeFailed(
                _(
                    "no answer within {timeout:g} s ({value} tries): UDP is filtered on "
                    "the way (a firewall drops it), or nothing listens there and ICMP is "
                    "filtered too"
                ).format(timeout=self.timeout, value=RETRIES + 1),
                cause="filtered",
            )
        return _("12 bytes back intact in {value:.3f} ms").format(value=took * 1000)

    async def datagram(self, size: int) -> str:
        payload = payload_without_exit(size, seed=size)
        with await self._socket() as sock:
            took = await self.round_trip(sock, payload)
        if took is None:
            self.unanswered.add(size)
            raise ProbeFailed(
                _("no echo of a {size}-byte datagram within {timeout:g} s").format(
                    size=size, timeout=self.timeout
                )
            )
        return _("{size} bytes back intact in {value:.3f} ms").format(size=size, value=took * 1000)

    async def loss(self) -> tuple[Status, str]:
        times: list[float] = []
        with await self._socket() as sock:
            for i in range(self.pings):
                await sock.send(b"ping %d\n" % i)
                began = trio.current_time()
                with trio.move_on_after(self.timeout):
                    while (await sock.recv(65536)) != b"ping %d\n" % i:
                        pass
                    times.append(trio.current_time() - began)
        lost = 100 * (self.pings - len(times)) / self.pings
        if not times:
            raise ProbeFailed(
                _(
                    # xgettext:no-python-format
                    "{pings} datagrams sent, none came back (100% loss)"
                ).format(pings=self.pings)
            )
        mean = statistics.fmean(times)
        mdev = math.sqrt(statistics.fmean([(t - mean) ** 2 for t in times]))
        rtt = "/".join(f"{v * 1000:.3f}" for v in (min(times), mean, max(times), mdev))
        figure = _(
            # xgettext:no-python-format
            "{sent} sent, {received} received, {lost:.0f}% loss; rtt min/avg/max/mdev = {rtt} ms"
        ).format(sent=self.pings, received=len(times), lost=lost, rtt=rtt)
        if lost > LOSS_FAILS:
            raise ProbeFailed(
                _("loss above {LOSS_FAILS:.0f}%: {figure}").format(
                    LOSS_FAILS=LOSS_FAILS, figure=figure
                )
            )
        return ("WARN" if lost else "PASS"), figure

    async def path_mtu(self) -> str:
        """The largest datagram that comes back with don't-fragment set, by bisection."""
        overhead = self.overhead
        with await self._socket(dont_fragment=True) as sock:
            low, high = 0, 65535 - overhead  # low: known to come back; high: the most
            while low < high:
                size = (low + high + 1) // 2
                if await self._comes_back(sock, size):
                    low = size
                else:
                    high = size - 1
            known = _route_mtu(sock)
        if low == 0:
            raise ProbeFailed(_("no datagram came back with the don't-fragment bit set"))
        return _mtu_figure(low, overhead, self.cut, known)

    async def _comes_back(self, sock: trio.socket.SocketType, size: int) -> bool:
        payload = payload_without_exit(size, seed=size)
        for _round in range(2):  # a router's ICMP "fragmentation needed" lowers the route's MTU
            try:
                return await self.round_trip(sock, payload, tries=2) is not None
            except ProbeFailed:  # cut by the server: not the path's doing, but not back whole
                return False
            except OSError as exc:
                if "too_large" not in cli.error_kinds(exc):
                    raise
        return False

    # ---- the whole check -----------------------------------------------------------------

    async def run(self) -> Report:
        report = Report(self.host, self.port)
        probe = report.probe

        later = [f"datagram of {n} bytes" for n in SIZES]
        later += [f"loss and rtt ({self.pings} datagrams)", "path MTU"]
        if not await probe("resolve", self.resolve):
            later.insert(0, "udp round trip")
        elif await probe("udp round trip", self.first):
            later = []
        if later:
            for name in later:
                report.probes.append(Probe(name, "SKIP", diagnosis=_("not run: no echo at all")))
            return report
        passed = {
            size: await probe(f"datagram of {size} bytes", partial(self.datagram, size))
            for size in SIZES
        }
        whole = [passed[size] for size in SIZES if size <= self.fits]
        if all(whole) and whole and not all(passed[size] for size in SIZES if size > self.fits):
            _blame_fragments(report, self.fits, self.unanswered)
        try:
            status, figure = await self.loss()
            report.probes.append(Probe(f"loss and rtt ({self.pings} datagrams)", status, figure))
        except (ProbeFailed, OSError) as exc:
            report.probes.append(
                Probe(f"loss and rtt ({self.pings} datagrams)", "FAIL", diagnosis=str(exc))
            )
        await probe("path MTU", self.path_mtu)
        return report


def _blame_fragments(report: Report, fits: int, unanswered: set[int]) -> None:
    """Small datagrams came back, large ones did not: say that fragments are dropped."""
    for item in report.probes:
        size = int(item.name.split()[2]) if item.name.startswith("datagram") else 0
        if item.status == "FAIL" and size > fits and size in unanswered:
            item.diagnosis += _(
                ": datagrams that fit one packet (up to {fits} bytes here) come back, "
                "larger ones (sent as IP fragments) do not: IP fragments are dropped on "
                "the path (a firewall or NAT)"
            ).format(fits=fits)
            item.cause = "fragments"


def _mtu_figure(low: int, overhead: int, cut: int | None, known: int | None) -> str:
    """The path MTU probe's figure, from the largest datagram that came back whole."""
    mtu = low + overhead
    if cut is not None and cut <= low + 1:
        return _(
            "path MTU at least {mtu}: larger datagrams came back cut to {cut} "
            "bytes by the server, so the path beyond that cannot be measured "
            "through it"
        ).format(mtu=mtu, cut=cut)
    figure = _(
        "path MTU {mtu} (the largest datagram that came back unfragmented: {low} bytes)"
    ).format(mtu=mtu, low=low)
    if mtu < 1500:
        return _("{figure}: a link on the way has a smaller MTU than Ethernet's 1500").format(
            figure=figure
        )
    if known is None:
        return figure
    return _("{figure}; this route: {known}").format(figure=figure, known=known)


def _route_mtu(sock: trio.socket.SocketType) -> int | None:
    df = capabilities.dont_fragment()
    if df is None or df.mtu is None:
        return None
    try:
        return int(sock.getsockopt(socket.IPPROTO_IP, df.mtu))
    except OSError:
        return None
