"""The PROXY layer: the header a load balancer sends before its client's bytes.

It reads the header (`proxy_header.ProxyHeaderReader`, sans-IO) within the configured time
and hands the next layer a stream that replays what came after the header in the same
reads (`replay.ReplayStream`), with who the client really is (`Arrival`). A connection it
cannot accept raises `Refused`, with the reason for the `rejected` event.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

import trio

from trio_echo.events import RejectReason, Words, format_address, preview, quoted, says
from trio_echo.i18n import N_
from trio_echo.proxy_header import BadProxyHeader, ProxyHeader, ProxyHeaderReader
from trio_echo.replay import ReplayStream
from trio_echo.server.accept import peer_of
from trio_echo.server.config import Network, ProxyConfig
from trio_echo.server.lifecycle import Lifecycle


@dataclass(frozen=True)
class Arrival:
    """What a PROXY header said of a connection."""

    peer: str | None  # the real client (or the balancer itself, for LOCAL and UNKNOWN)
    via: str | None  # the balancer (None: gone before we looked)
    health: bool  # a v2 LOCAL header: the balancer's own connection, a health check
    source: str | None = None  # the real client's address alone, as the header named it


class Refused(Exception):
    """The connection is refused; `reason` and `detail` are the `rejected` event's."""

    def __init__(self, reason: RejectReason, detail: Words | None = None) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


async def receive_header(
    stream: trio.SocketStream, config: ProxyConfig, life: Lifecycle, idle: float | None = None
) -> tuple[Arrival, ReplayStream]:
    """Read the PROXY header; the client it names and the stream to go on with. Raises
    `Refused` (the peer is not trusted, the header is bad, late, or the server is stopping
    while it waits: a stop cancels the wait). Late: after the proxy timeout, or the idle
    timeout `idle` if shorter (a connection that sends nothing is idle in every phase)."""
    balancer = peer_of(stream)
    if config.trusted is not None and not _within(stream, config.trusted):
        raise Refused("untrusted_proxy")
    reader = ProxyHeaderReader()
    seen = b""
    header: ProxyHeader | None = None
    limit = _Limit(config.timeout, "--proxy-timeout")
    if idle is not None and idle < config.timeout:
        limit = _Limit(idle, "--idle-timeout")
    with trio.move_on_after(limit.seconds) as waited:
        life.greeting.add(waited)
        try:
            while header is None:
                data = bytes(await stream.receive_some(min(4096, reader.wanted())))
                seen = seen or data
                if not data:
                    raise BadProxyHeader(
                        says("closed", N_("the connection closed before a whole header"))
                    )
                header = reader.feed(data)
        except BadProxyHeader as exc:
            raise Refused("bad_proxy_header", _bad_header(exc, seen)) from None
        except trio.BrokenResourceError:
            detail = says("reset", N_("the connection was reset before a whole PROXY header"))
            raise Refused("bad_proxy_header", detail) from None
        finally:
            life.greeting.discard(waited)
    if header is None:
        raise Refused("bad_proxy_header", _late(limit, life, seen))
    replay = ReplayStream(stream, reader.rest)
    if header.local or not isinstance(header.source, tuple):  # LOCAL, UNKNOWN, UNSPEC
        return Arrival(balancer, balancer, header.local), replay
    return Arrival(format_address(*header.source), balancer, False, header.source[0]), replay


def _within(stream: trio.SocketStream, networks: Sequence[Network]) -> bool:
    try:
        address = ipaddress.ip_address(stream.socket.getpeername()[0])
    except (OSError, ValueError):
        return False
    return any(address in network for network in networks)


def _bad_header(exc: BadProxyHeader, seen: bytes) -> Words:
    if exc.words.code == "not_proxy":
        return says(
            "not_proxy",
            N_("it sent {quoted} instead of a PROXY header: is the balancer set to "
               "send-proxy (or send-proxy-v2)?"),
            quoted=quoted(preview(seen), len(seen)),
        )  # fmt: skip
    return says(exc.words.code, N_("a bad PROXY header: {why}"), why=exc.words)


@dataclass(frozen=True)
class _Limit:
    seconds: float
    option: str  # the option that set it


def _late(limit: _Limit, life: Lifecycle, seen: bytes) -> Words:
    if life.stopping:
        return says("stopping", N_("the server is stopping"))
    if not seen:
        return says(
            "timeout",
            N_("no PROXY header within {seconds:g} s ({option})"),
            seconds=limit.seconds,
            option=limit.option,
        )
    return says(
        "timeout",
        N_("no PROXY header within {seconds:g} s ({option}): it sent only {quoted}"),
        seconds=limit.seconds,
        option=limit.option,
        quoted=quoted(preview(seen), len(seen)),
    )
