"""A faulty link: a TCP relay that injects faults, to show that clients and servers stay
correct on a bad network. (It was `trio_echo.proxy`; renamed so as not to be confused with
the PROXY protocol that load balancers speak.)

Between a client and a server it cuts every segment into random small pieces, delays them,
stalls a direction for a while, or resets both connections (SO_LINGER 0, so each side sees a
RST), at rates you choose, from a seed you choose. Half-closes are passed on. Everything is
counted in `FaultCounts`, so a test or the soak can compare what each side reports with
what the proxy did.

    python -m trio_echo.faulty_link --to 127.0.0.1:7007 --split 16 --delay 0.005 --reset 0.001
"""

from __future__ import annotations

import argparse
import contextlib
import random
import socket
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Final, final

import trio

from trio_echo import cli, i18n
from trio_echo.events import format_address
from trio_echo.i18n import N_, _

DESCRIPTION: Final = (
    "A faulty link: a TCP relay that injects faults, to show that clients and servers stay "
    "correct on a bad network."
)
READ_SIZE: Final = 65536


@dataclass(frozen=True)
class Faults:
    split: int = 0  # cut pieces into random sizes from 1 to this many bytes (0: do not cut)
    delay: float = 0.0  # wait up to this many seconds before each piece
    stall: float = 0.0  # chance, per piece, of stalling the direction
    stall_seconds: float = 0.5
    reset: float = 0.0  # chance, per piece, of resetting both connections


@dataclass
class FaultCounts:
    connections: int = 0
    pieces: int = 0
    delays: int = 0
    stalls: int = 0
    resets: int = 0
    bytes_relayed: int = 0
    failed_upstream: int = 0


class _Reset(Exception):
    """Raised inside a connection's nursery to tear both sides down with RSTs."""


def abort(stream: trio.SocketStream) -> None:
    """Make the coming close send a RST instead of a FIN."""
    with contextlib.suppress(OSError):
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@final
@dataclass
class FaultProxy:
    target_host: str
    target_port: int
    faults: Faults
    seed: int = 0
    counts: FaultCounts = field(default_factory=FaultCounts)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    async def run(
        self, port: int = 0, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen on 127.0.0.1:`port` (0: a free one, handed to `task_status.started`)."""
        listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
        bound = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(trio.serve_listeners, self._relay, listeners))
            task_status.started(bound)

    async def _relay(self, client: trio.SocketStream) -> None:
        self.counts.connections += 1
        try:
            server = await trio.open_tcp_stream(self.target_host, self.target_port)
        except OSError:
            self.counts.failed_upstream += 1
            abort(client)
            return
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pump, client, server)
                nursery.start_soon(self._pump, server, client)
        except* _Reset:
            self.counts.resets += 1
            abort(client)
            abort(server)
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            abort(client)
            abort(server)
        finally:
            await trio.aclose_forcefully(server)
            await trio.aclose_forcefully(client)

    async def _pump(self, source: trio.SocketStream, sink: trio.SocketStream) -> None:
        faults, rng = self.faults, self._random
        while data := await source.receive_some(READ_SIZE):
            view = memoryview(data)
            while view:
                size = rng.randint(1, faults.split) if faults.split else len(view)
                piece, view = view[:size], view[size:]
                if faults.reset and rng.random() < faults.reset:
                    raise _Reset
                if faults.stall and rng.random() < faults.stall:
                    self.counts.stalls += 1
                    await trio.sleep(faults.stall_seconds)
                elif faults.delay:
                    self.counts.delays += 1
                    await trio.sleep(rng.uniform(0, faults.delay))
                await sink.send_all(piece)
                self.counts.pieces += 1
                self.counts.bytes_relayed += len(piece)
        await sink.send_eof()


def _parser() -> argparse.ArgumentParser:
    parser = cli.parser("trio-echo-faulty-link", N_(DESCRIPTION))
    parser.add_argument("--to", required=True, metavar="HOST:PORT", help=N_("the server"))
    parser.add_argument("--port", type=cli.port_number, default=0, help=N_("where to listen"))
    parser.add_argument("--split", type=int, default=0, help=N_("cut into pieces of 1..N bytes"))
    parser.add_argument("--delay", type=float, default=0.0, help=N_("up to S seconds per piece"))
    parser.add_argument("--stall", type=float, default=0.0, help=N_("chance of a stall, per piece"))
    parser.add_argument("--reset", type=float, default=0.0, help=N_("chance of a reset, per piece"))
    parser.add_argument("--seed", type=int, default=0)
    return parser


async def _run(args: argparse.Namespace) -> None:
    host, _colon, port = args.to.rpartition(":")
    faults = Faults(split=args.split, delay=args.delay, stall=args.stall, reset=args.reset)
    proxy = FaultProxy(host.strip("[]"), int(port), faults, seed=args.seed)
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(proxy.run, args.port)
        print(
            _("proxying 127.0.0.1:{bound} -> {where}").format(
                bound=bound, where=format_address(host, int(port))
            ),
            flush=True,
        )


def main(argv: Sequence[str] | None = None) -> None:
    i18n.setup(argv)  # before the parser: its help is in the chosen language
    args = _parser().parse_args(argv)
    sys.exit(cli.run_async(partial(_run, args), "trio-echo-faulty-link", args.to))


if __name__ == "__main__":
    main()
