"""UDP: RFC 862's datagram echo, made safe to expose.

A UDP echo is a classic abuse target: two echo services made to bounce a datagram between
them forever (CVE-1999-0103, echo against chargen), a datagram to a broadcast address
answered by every host (fraggle), a forged source address turning the echo into a reflector.
So every datagram passes these guards before it is answered, each on by default:

1. never more out than in: one datagram back per datagram in, the same size;
2. the loop guard: a datagram from a source port below 1024 (where echo, chargen, daytime
   and other services live) is dropped (`--udp-allow-low-ports` turns this off);
3. a per-source rate limit (`--udp-rate`, datagrams per second, with a burst of one second's
   worth), in a table of bounded size, so a flood from countless forged sources cannot grow
   memory: a source whose bucket is full again carries no state and is forgotten first, and
   while every entry is busy, new sources share one bucket;
4. a datagram addressed to a broadcast or multicast address is not answered (the
   destination comes from IP_PKTINFO; IPv6 has no broadcast, and multicast is told by the
   address).

`RateLimiter` and `DropTally` are sans-IO: no socket, no clock of their own. Drops are
reported as one `udp_dropped` event at most once a second, however many there are.
"""

from __future__ import annotations

import socket
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Final, Literal, cast, final

import trio

from trio_echo import capabilities
from trio_echo.access import AccessRules
from trio_echo.binding import bind_all
from trio_echo.events import Datagram, Emit, UdpDropped, format_address, preview

DropReason = Literal["loop_guard", "repeat_guard", "rate_limit", "broadcast", "truncated", "denied"]

DEFAULT_RATE: Final = 1000.0  # datagrams per second per source address
MAX_SOURCES: Final = 4096  # rate-limit entries kept; beyond, new sources share one bucket
# The repeat guard: a peer that sends us the same datagram again this many times in a row,
# each within REPEAT_GAP seconds of the last, is taken for an echo service bouncing our
# answers back (people and programs send something new, or pause); it is not answered
# again until it pauses for REPEAT_GAP.
REPEAT_LIMIT: Final = 64
REPEAT_GAP: Final = 0.5
REPORT_SECONDS: Final = 1.0  # at most one udp_dropped event per this
TOP_SOURCES: Final = 5
BATCH: Final = 32  # datagrams served between two checkpoints, when they keep coming
LOW_PORTS: Final = 1024
# The largest UDP payload: 65,535 bytes of IP minus the headers (65,507 over IPv4, 65,527
# over IPv6). One more byte of buffer tells a truncated datagram (MSG_TRUNC) apart.
RECEIVE_SIZE: Final = 65536
# Windows has no MSG_TRUNC: there a datagram larger than the buffer is an error (WSAEMSGSIZE),
# and ours holds the largest there is.
_MSG_TRUNC: Final = getattr(socket, "MSG_TRUNC", 0)


# ---- sans-IO guards -------------------------------------------------------------------------


@final
class RateLimiter:
    """Token buckets per source, `rate` a second with a burst of `rate`, at most
    `max_sources` of them; `allow` answers for one datagram at `now` (seconds)."""

    def __init__(self, rate: float, max_sources: int = MAX_SOURCES) -> None:
        self.rate = rate
        self.burst = max(rate, 1.0)
        self.max_sources = max_sources
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, when
        self._shared = (self.burst, 0.0)  # for new sources while every entry is busy

    def __len__(self) -> int:
        return len(self._buckets)

    def _take(self, bucket: tuple[float, float], now: float) -> tuple[bool, tuple[float, float]]:
        tokens, then = bucket
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        if tokens >= 1.0 - 1e-9:  # a source keeping exactly to its rate, despite rounding
            return True, (max(tokens - 1.0, 0.0), now)
        return False, (tokens, now)

    def allow(self, source: str, now: float) -> bool:
        bucket = self._buckets.get(source)
        if bucket is None:
            if len(self._buckets) >= self.max_sources and not self._forget_one(now):
                allowed, self._shared = self._take(self._shared, now)
                return allowed
            bucket = (self.burst, now)
        allowed, self._buckets[source] = self._take(bucket, now)
        self._buckets.move_to_end(source)
        return allowed

    def _forget_one(self, now: float) -> bool:
        """Forget the least recently seen source if its bucket is full again (it then
        carries no state: forgetting it changes nothing); False if it is still busy."""
        source, (tokens, then) = next(iter(self._buckets.items()))
        if tokens + (now - then) * self.rate < self.burst:
            return False
        del self._buckets[source]
        return True


@final
class RepeatGuard:
    """Breaks echo loops between echo servers, whatever their ports and rate limits: answers
    for one datagram from `peer` at `now` (seconds). At most `max_peers` peers remembered,
    the least recently heard forgotten first."""

    def __init__(
        self, limit: int = REPEAT_LIMIT, gap: float = REPEAT_GAP, max_peers: int = MAX_SOURCES
    ) -> None:
        self.limit = limit
        self.gap = gap
        self.max_peers = max_peers
        self._peers: OrderedDict[tuple[str, int], tuple[int, int, float]] = OrderedDict()

    def allow(self, peer: tuple[str, int], data: bytes, now: float) -> bool:
        digest = hash(data)
        last = self._peers.get(peer)
        repeats = 0
        if last is not None and last[0] == digest and now - last[2] < self.gap:
            repeats = last[1] + 1
        self._peers[peer] = (digest, repeats, now)
        self._peers.move_to_end(peer)
        if len(self._peers) > self.max_peers:
            self._peers.popitem(last=False)
        return repeats < self.limit


@final
@dataclass
class DropTally:
    """Drops counted between two reports; `report` hands out the event once it is due."""

    counts: Counter[str] = field(default_factory=Counter)
    sources: Counter[str] = field(default_factory=Counter)
    last_report: float = float("-inf")

    def add(self, reason: DropReason, source: str) -> None:
        self.counts[reason] += 1
        if source in self.sources or len(self.sources) < MAX_SOURCES:
            self.sources[source] += 1

    def report(self, now: float, force: bool = False) -> UdpDropped | None:
        if not self.counts or (now - self.last_report < REPORT_SECONDS and not force):
            return None
        event = UdpDropped(
            count=sum(self.counts.values()),
            reasons=dict(sorted(self.counts.items())),
            top_sources=[f"{src} ({n})" for src, n in self.sources.most_common(TOP_SOURCES)],
        )
        self.counts.clear()
        self.sources.clear()
        self.last_report = now
        return event


def is_broadcast_or_multicast(destination: bytes, local: bytes) -> bool:
    """Whether a datagram was sent to a group (multicast) or to everyone (broadcast) rather
    than to this host, from its packed destination and the local address it arrived on (as
    IP_PKTINFO gives them). IPv6 has no broadcast: multicast is ff00::/8. An IPv4 datagram
    addressed to this host has the local address as its destination; a broadcast one (to
    255.255.255.255 or to a subnet's broadcast address, which the address alone cannot tell)
    and a multicast one do not."""
    if len(destination) == 16:
        return destination[0] == 0xFF
    if destination == b"\xff\xff\xff\xff" or 224 <= destination[0] <= 239:
        return True
    # A datagram queued before IP_PKTINFO was asked for (the one that wakes a socket-activated
    # server) comes with no local address (0.0.0.0): only the address itself can tell then.
    return any(local) and destination != local


# ---- the endpoint ---------------------------------------------------------------------------

# Where a datagram was sent: its destination and the local address it came to, packed, as
# IP_PKTINFO gives them; None where the platform does not say.
Where = tuple[bytes, bytes] | None


def _peer(address: object) -> tuple[str, int]:
    host, port, *_ = cast(tuple[str, int], address)
    return host, port


def ask_destination(sock: trio.socket.SocketType) -> None:
    """Have each datagram say where it was sent (to tell broadcast and multicast), where the
    platform can (`capabilities.ipv4_packet_info`; Windows cannot)."""
    if sock.family == socket.AF_INET6:
        if capabilities.ipv6_packet_info():
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
    elif (option := capabilities.ipv4_packet_info()) is not None:
        sock.setsockopt(socket.IPPROTO_IP, option, 1)


def tells_destination(sock: trio.socket.SocketType) -> bool:
    """Whether datagrams on `sock` come with their destination, so that the broadcast guard
    works (without, the loop guard and the rate limit still do)."""
    if sock.family == socket.AF_INET6:
        return capabilities.ipv6_packet_info()
    return capabilities.ipv4_packet_info() is not None


@dataclass
class UdpCounts:
    datagrams_in: int = 0
    datagrams_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0


@final
class UdpEcho:
    """Echo every datagram that passes the guards, on one bound socket, until cancelled."""

    def __init__(
        self,
        sock: trio.socket.SocketType,
        *,
        emit: Emit,
        data_events: bool,
        rate: float | None = DEFAULT_RATE,
        allow_low_ports: bool = False,
        access: AccessRules | None = None,
    ) -> None:
        self.sock = sock
        self.access = access  # --allow, --deny
        self._emit = emit
        self._data_events = data_events
        self.limiter = RateLimiter(rate if rate is not None else float("inf"))
        self.repeats = RepeatGuard()
        self._limited = rate is not None
        self._allow_low_ports = allow_low_ports
        self._ipv4 = sock.family == socket.AF_INET
        self._ip_pktinfo = capabilities.ipv4_packet_info()
        self.tells_destination = tells_destination(sock)
        self.counts = UdpCounts()
        self.dropped = DropTally()

    @staticmethod
    async def bind(host: str, port: int, reuse_port: bool = False) -> list[trio.socket.SocketType]:
        """Datagram sockets on every address `host` names (as open_tcp_listeners does);
        with `reuse_port`, shared with other processes (`--workers`)."""
        return await bind_all(host, port, socket.SOCK_DGRAM, ask_destination, reuse_port=reuse_port)

    def _destination(self, ancillary: list[tuple[int, int, bytes]]) -> Where:
        """(destination, local address), packed, from IP_PKTINFO (IPv6: the destination)."""
        for level, kind, data in ancillary:
            if level == socket.IPPROTO_IP and kind == self._ip_pktinfo and len(data) >= 12:
                return data[8:12], data[4:8]  # in_pktinfo: ifindex, spec_dst, addr
            if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO and len(data) >= 16:
                return data[:16], data[:16]
        return None

    def verdict(
        self, peer: tuple[str, int], flags: int, where: Where, now: float, data: bytes = b""
    ) -> DropReason | None:
        """Why a datagram must not be answered, or None to answer it."""
        if self.access and not self.access.allows(peer[0]):
            return "denied"
        if flags & _MSG_TRUNC:
            return "truncated"
        if not self._allow_low_ports and peer[1] < LOW_PORTS:
            return "loop_guard"
        if where is not None and is_broadcast_or_multicast(*where):
            return "broadcast"
        if not self.repeats.allow(peer, data, now):
            return "repeat_guard"
        if self._limited and not self.limiter.allow(peer[0], now):
            return "rate_limit"
        return None

    async def run(self) -> None:
        """Receive, judge, answer; report drops at most once a second. Cancel it to stop.

        As the TCP fast path does, it calls the non-blocking socket itself and waits
        (`wait_readable`) only when nothing is there, and passes a checkpoint every `BATCH`
        datagrams: awaiting trio's `recvmsg` and `sendto` cost two trips through the scheduler
        each, and a checkpoint per datagram one (1 KiB at 10 flows, datagrams a second:
        19,000 through trio's socket calls, 46,000 with a checkpoint each, 80,000 with one
        every `BATCH`, 118,000 with the destination judged on packed bytes)."""
        # The socket, taken over from trio as a standard library socket (any platform's: a
        # descriptor or a Windows handle), whose calls never wait.
        sock = self.sock
        raw = socket.socket(sock.family, sock.type, sock.proto, fileno=sock.detach())
        raw.setblocking(False)
        with raw:
            await self._serve(raw)

    def _receive(self, raw: socket.socket) -> tuple[bytes, tuple[str, int], int, Where]:
        """One datagram, its sender, its flags and where it was sent (BlockingIOError if
        none is there)."""
        if not self.tells_destination:  # no recvmsg (Windows), or no packet info
            data, address = raw.recvfrom(RECEIVE_SIZE)
            return data, _peer(address), 0, None
        data, ancillary, flags, address = raw.recvmsg(RECEIVE_SIZE, 256)
        return data, _peer(address), flags, self._destination(ancillary)

    async def _serve(self, raw: socket.socket) -> None:
        served = 0
        try:
            while True:
                served += 1
                if served % BATCH == 0:
                    await trio.lowlevel.checkpoint()  # a stop takes effect; fair to the others
                try:
                    data, peer, flags, where = self._receive(raw)
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(raw)
                    continue
                except OSError:
                    # An ICMP error about an earlier answer (Windows: WSAECONNRESET, on the
                    # next receive after a port unreachable): nothing to read, nothing wrong.
                    continue
                now = trio.current_time()
                self.counts.datagrams_in += 1
                self.counts.bytes_in += len(data)
                reason = self.verdict(peer, flags, where, now, data)
                if reason is not None:
                    self.dropped.add(reason, peer[0])
                else:
                    await self._answer(raw, data, peer)
                event = self.dropped.report(now)
                if event is not None:
                    self._emit(event)
        finally:
            event = self.dropped.report(trio.current_time(), force=True)
            if event is not None:
                self._emit(event)

    async def _answer(self, raw: socket.socket, data: bytes, peer: tuple[str, int]) -> None:
        if self._data_events:
            where = format_address(peer[0], peer[1])
            self._emit(Datagram(peer=where, bytes=len(data), preview=preview(data)))
        while True:
            try:
                raw.sendto(data, peer)
                break
            except BlockingIOError:  # the send buffer is full: wait, as any sender would
                await trio.lowlevel.wait_writable(raw)
            except OSError:  # the sender is unreachable now (an ICMP error): nothing to do
                return
        self.counts.datagrams_out += 1
        self.counts.bytes_out += len(data)
