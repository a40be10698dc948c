"""The first layer: listeners, and the loops that accept their connections.

`serve_listeners` has the shape of trio's own (one accept loop per listener, each connection
handed to `handler` in `handler_nursery`), and differs where a server needs it to: running out
of descriptors or memory (`cli.error_kinds`: EMFILE, ENFILE, ENOMEM, ENOBUFS) pauses
accepting, retried every ACCEPT_RETRY_SECONDS, with one event when it starts and one when it
ends instead of trio's log line per failure.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

import trio

from trio_echo import capabilities, cli
from trio_echo.binding import bind_all
from trio_echo.events import AcceptPaused, AcceptResumed, Emit, format_address
from trio_echo.replay import ReplayStream

ACCEPT_RETRY_SECONDS: Final = 0.1
LISTEN_BACKLOG: Final = 0xFFFF  # as trio does: the kernel lowers it to net.core.somaxconn

Handler = Callable[[trio.SocketStream], Awaitable[object]]


async def open_listeners(host: str, port: int, *, reuse_port: bool) -> list[trio.SocketListener]:
    """`trio.open_tcp_listeners`, but `::` listens on IPv6 and IPv4 (trio's is IPv6-only), and
    with `reuse_port` SO_REUSEPORT is set: other processes (`--workers`) listen on the same
    port and the kernel spreads new connections over them all. Raises OSError (address in
    use, bad host...)."""
    if not reuse_port and host != "::":
        return await trio.open_tcp_listeners(port, host=host)
    socks = await bind_all(
        host, port, socket.SOCK_STREAM, _reuse_address, reuse_port=reuse_port, dual_stack=True
    )
    for sock in socks:
        sock.listen(LISTEN_BACKLOG)
    return [trio.SocketListener(sock) for sock in socks]


def _reuse_address(sock: trio.socket.SocketType) -> None:
    if capabilities.reuse_address_is_safe():
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)


async def serve_listeners(
    handler: Handler,
    listeners: Sequence[trio.SocketListener],
    *,
    handler_nursery: trio.Nursery,
    emit: Emit,
    active: Callable[[], int],
) -> None:
    """Accept on every listener until cancelled, each connection's `handler` a task of
    `handler_nursery`; closes the listeners when it ends. `active()` is the number of live
    connections, for the pause event."""
    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(_accept_loop, handler, listener, handler_nursery, emit, active)


async def _accept_loop(
    handler: Handler,
    listener: trio.SocketListener,
    handler_nursery: trio.Nursery,
    emit: Emit,
    active: Callable[[], int],
) -> None:
    async with listener:
        paused_at: float | None = None
        failures = 0
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if "no_resources" not in cli.error_kinds(exc):
                    raise
                if paused_at is None:
                    paused_at, failures = trio.current_time(), 0
                    code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
                    emit(AcceptPaused(error=code, active=active()))
                failures += 1
                await trio.sleep(ACCEPT_RETRY_SECONDS)
                continue
            if paused_at is not None:
                emit(AcceptResumed(failures=failures, paused=trio.current_time() - paused_at))
                paused_at = None
            handler_nursery.start_soon(handler, stream)


def peer_of(stream: trio.abc.Stream) -> str | None:
    """Who is at the other end, as the events write an address: host:port, `unix:PATH` (a
    Unix socket's peer: tests, a socketpair), `memory` (trio's in-memory streams); None if
    it was gone before we looked (reset: it has no name any more, ENOTCONN)."""
    if isinstance(stream, ReplayStream):
        stream = stream.inner
    if not isinstance(stream, trio.SocketStream):
        return "memory"
    try:
        name = stream.socket.getpeername()
    except OSError:
        return None
    if not isinstance(name, tuple):
        return f"unix:{name}" if name else "unix"
    return format_address(name[0], name[1])
