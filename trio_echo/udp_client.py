"""The client's UDP mode: each line one datagram, each echo awaited, resent, or counted lost.

Stop-and-wait: a datagram is sent, its echo awaited for `--udp-timeout` seconds, the
datagram sent again up to `--udp-retries` times, and only then counted lost; so the echoes
reach standard output in input order. An echo that comes back after the client moved on is
counted, not printed: out of order (its datagram had been given up for lost) or duplicated
(it had come back already). On a connected UDP socket, the ICMP "port unreachable" that
answers a datagram nobody listens for arrives as ECONNREFUSED (Windows: WSAECONNRESET):
reported at once as refused.

`DatagramCutter` is sans-IO: bytes in, datagrams out.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final, final

import trio

from trio_echo.events import DatagramEchoed, DatagramSent, Emit, preview
from trio_echo.i18n import _

RECEIVE_SIZE: Final = 65536
REMEMBERED: Final = 4096  # earlier datagrams kept to recognise their late echoes


async def receive(sock: trio.socket.SocketType, size: int = RECEIVE_SIZE) -> bytes:
    """A datagram from a connected UDP socket; ConnectionRefusedError if the peer's host said
    that nothing listens there (ICMP port unreachable), on every platform: POSIX says
    ECONNREFUSED, Windows WSAECONNRESET."""
    try:
        return await sock.recv(size)
    except ConnectionResetError as exc:
        raise ConnectionRefusedError(*exc.args) from exc


@final
class DatagramCutter:
    """Input bytes into datagrams: a line (up to and including `\\n`) is one; a longer line,
    or input without newlines, is cut every `size` bytes; `end` gives what is left."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(_("a datagram holds at least one byte"))
        self.size = size
        self._pending = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._pending += data
        out: list[bytes] = []
        while True:
            newline = self._pending.find(b"\n", 0, self.size)
            if newline >= 0:
                cut = newline + 1
            elif len(self._pending) >= self.size:
                cut = self.size
            else:
                return out
            out.append(bytes(self._pending[:cut]))
            del self._pending[:cut]

    def end(self) -> list[bytes]:
        rest, self._pending = bytes(self._pending), bytearray()
        return [rest] if rest else []


@dataclass
class UdpTally:
    sent: int = 0
    echoed: int = 0
    lost: int = 0
    duplicated: int = 0
    reordered: int = 0
    rtts: list[float] = field(default_factory=list)

    def rtt(self) -> tuple[float | None, float | None, float | None]:
        if not self.rtts:
            return None, None, None
        return min(self.rtts), sum(self.rtts) / len(self.rtts), max(self.rtts)


@final
class UdpSession:
    """One run of the client over a connected datagram socket."""

    def __init__(
        self,
        sock: trio.socket.SocketType,
        sink: trio.abc.SendStream,
        *,
        emit: Emit,
        data_events: bool = True,
        timeout: float,
        retries: int,
    ) -> None:
        self._sock = sock
        self._sink = sink
        self._emit = emit
        self._data_events = data_events
        self._timeout = timeout
        self._retries = retries
        self.tally = UdpTally()
        # Earlier datagrams by content: their number, and whether their echo came back.
        self._past: OrderedDict[bytes, tuple[int, bool]] = OrderedDict()

    async def run(self, source: trio.abc.ReceiveStream, size: int) -> UdpTally:
        """Send all of `source` as datagrams; ConnectionRefusedError if nobody listens."""
        cutter = DatagramCutter(size)
        while data := await source.receive_some():
            for datagram in cutter.feed(bytes(data)):
                await self.exchange(datagram)
        for datagram in cutter.end():
            await self.exchange(datagram)
        return self.tally

    async def exchange(self, payload: bytes) -> None:
        self.tally.sent += 1
        number = self.tally.sent
        for attempt in range(1, self._retries + 2):
            began = trio.current_time()
            await self._sock.send(payload)
            if self._data_events:
                self._emit(DatagramSent(number, len(payload), attempt, preview(payload)))
            with trio.move_on_at(began + self._timeout):
                while True:
                    data = await receive(self._sock)
                    if data == payload:
                        rtt = trio.current_time() - began
                        self.tally.echoed += 1
                        self.tally.rtts.append(rtt)
                        await self._sink.send_all(data)
                        if self._data_events:
                            self._emit(DatagramEchoed(number, len(data), rtt, late=False))
                        self._remember(payload, number, echoed=True)
                        return
                    self._late(data)
        self.tally.lost += 1
        self._remember(payload, number, echoed=False)

    def _late(self, data: bytes) -> None:
        earlier = self._past.get(data)
        if earlier is None:
            return  # not an echo of ours: nothing to count
        number, echoed = earlier
        if echoed:
            self.tally.duplicated += 1
        else:
            self.tally.reordered += 1
            self._past[data] = (number, True)
        if self._data_events:
            self._emit(DatagramEchoed(number, len(data), 0.0, late=True))

    def _remember(self, payload: bytes, number: int, *, echoed: bool) -> None:
        self._past[payload] = (number, echoed)
        self._past.move_to_end(payload)
        if len(self._past) > REMEMBERED:
            self._past.popitem(last=False)
