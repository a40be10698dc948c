"""Binding sockets on every address a host name gives, as `trio.open_tcp_listeners` does,
with the options our listeners need (SO_REUSEPORT for `--workers`, IP_PKTINFO for UDP)."""

from __future__ import annotations

import socket
from collections.abc import Callable

import trio

Prepare = Callable[[trio.socket.SocketType], None]


async def bind_all(
    host: str,
    port: int,
    kind: socket.SocketKind,
    prepare: Prepare,
    *,
    reuse_port: bool,
    dual_stack: bool = False,
) -> list[trio.socket.SocketType]:
    """Bound sockets of `kind`, one per address of `host`, each set up by `prepare` before
    binding; none is left open if any fails (the error is raised). IPv6 sockets are
    IPv6-only, but with `dual_stack` the IPv6 wildcard `::` takes IPv4 too (as mapped
    addresses, `::ffff:192.0.2.1`): one socket for "every address of this machine"."""
    socks: list[trio.socket.SocketType] = []
    try:
        for family, kind_, proto, _name, address in await trio.socket.getaddrinfo(
            host, port, type=kind, flags=socket.AI_PASSIVE
        ):
            sock = trio.socket.socket(family, kind_, proto)
            socks.append(sock)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                only = not (dual_stack and address[0] == "::")
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(only))
            prepare(sock)
            await sock.bind(address)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks
