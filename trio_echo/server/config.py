"""What a server is told: one frozen, typed configuration for the CLI, `serve()` and the
pytest plugin, checked once when it is made.

Each optional layer has its own part: `tls` (`ServerTls`, made from files or
an ephemeral certificate), `proxy` (`ProxyConfig`: every connection begins with a PROXY
header) and `udp` (`UdpConfig`: a datagram echo beside the TCP one). None means the layer
is off. Nothing here is a socket or a task: sockets handed over by systemd and the event
sink are given to `EchoServer` beside its configuration.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Final

from trio_echo.access import AccessRules
from trio_echo.cli import MAX_CHUNK_SIZE
from trio_echo.i18n import _
from trio_echo.tls import ServerTls
from trio_echo.udp import DEFAULT_RATE

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 7007  # RFC 862's echo port is 7; 7007 needs no privileges
DEFAULT_CHUNK_SIZE: Final = 1024
DEFAULT_SHUTDOWN_TIMEOUT: Final = 5.0
# Below the 1024 descriptors a process gets by default on Linux, leaving room for the rest.
DEFAULT_MAX_CONNECTIONS: Final = 1000
DEFAULT_PROXY_TIMEOUT: Final = 5.0  # seconds a balancer has to send its PROXY header
# Descriptors kept aside from the connections: the log, listeners, UDP sockets, the worker
# threads' wake-up pipes, a certificate being read... (a quarter of a small limit).
FD_RESERVE: Final = 64
DEFAULT_MAX_MESSAGE: Final = 1 << 20  # a WebSocket message, reassembled or inflated
DEFAULT_METRICS_HOST: Final = "127.0.0.1"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def connections_for(fd_limit: int) -> int:
    """How many clients a descriptor limit has room for, after the reserve."""
    return max(1, fd_limit - min(FD_RESERVE, fd_limit // 4))


@dataclass(frozen=True, kw_only=True, slots=True)
class ProxyConfig:
    """The PROXY layer: every connection begins with a PROXY header (v1 or v2)."""

    timeout: float = DEFAULT_PROXY_TIMEOUT  # seconds to send the whole header
    trusted: tuple[Network, ...] | None = None  # who may send one; None: anyone

    def __post_init__(self) -> None:
        if self.timeout <= 0:
            raise ValueError(_("proxy timeout must be positive"))


@dataclass(frozen=True, kw_only=True, slots=True)
class UdpConfig:
    """The datagram echo (RFC 862 over UDP) on the same host and port."""

    rate: float | None = DEFAULT_RATE  # per source address; None: no limit
    allow_low_ports: bool = False  # off: the loop guard against other echo services


@dataclass(frozen=True, kw_only=True, slots=True)
class HttpConfig:
    """The HTTP side: a page and the WebSocket echo (`/ws`), on a port of its own."""

    host: str | None = None  # None: the echo's host
    port: int = 0  # 0: a free one, said in the `listening` event
    max_message: int = DEFAULT_MAX_MESSAGE  # bytes of one WebSocket message (1009 past it)

    def __post_init__(self) -> None:
        if not 1 <= self.max_message <= MAX_CHUNK_SIZE:
            raise ValueError(_("the WebSocket message limit must be from 1 to 16777216 (16 MiB)"))


@dataclass(frozen=True, kw_only=True, slots=True)
class MetricsConfig:
    """The operator's port: /metrics, /healthz, /readyz, /info."""

    host: str = DEFAULT_METRICS_HOST  # this machine only, unless asked
    port: int = 0  # 0: a free one, said in the `listening` event


@dataclass(frozen=True, kw_only=True, slots=True)
class ServerConfig:
    """Everything an `EchoServer` is told. Raises ValueError for a value it cannot serve."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    chunk_size: int = DEFAULT_CHUNK_SIZE  # bytes per read; each read is echoed at once
    exit_command: bool = True  # the line `exit` ends a session
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT  # to echo what was read, at a stop
    drain_timeout: float = 0.0  # before a stop: health checks fail, everyone is served
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    idle_timeout: float | None = None  # close a silent client; None: never
    max_bytes: int | None = None  # end a session once it has sent this many bytes
    max_duration: float | None = None  # end a session this many seconds after it began
    data_events: bool = True  # the per-read events `received` and `sent`
    reuse_port: bool = False  # SO_REUSEPORT: other processes serve the same port
    tcp: bool = True
    tls: ServerTls | None = None
    proxy: ProxyConfig | None = None
    udp: UdpConfig | None = None
    http: HttpConfig | None = None
    metrics: MetricsConfig | None = None
    access: AccessRules = field(default_factory=AccessRules)  # --allow, --deny (default: anyone)
    name: str = field(default_factory=socket.gethostname)  # which server this is (--name)
    fd_limit: int | None = None  # the descriptor limit, to say (None: sockets are handles)
    stop_signals: tuple[str, ...] = ()  # what stops it (main handles them), to say so

    def __post_init__(self) -> None:
        if not 1 <= self.chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(_("chunk_size must be from 1 to 16777216 (16 MiB)"))
        if self.shutdown_timeout < 0:
            raise ValueError(_("shutdown_timeout must not be negative"))
        if self.drain_timeout < 0:
            raise ValueError(_("drain_timeout must not be negative"))
        if self.max_connections < 1:
            raise ValueError(_("max_connections must be at least 1"))
        if self.max_bytes is not None and self.max_bytes < 1:
            raise ValueError(_("max_bytes must be at least 1 (or None, for no limit)"))
        if self.max_duration is not None and self.max_duration <= 0:
            raise ValueError(_("max_duration must be positive (or None, for no limit)"))
        if self.idle_timeout is not None and self.idle_timeout <= 0:
            raise ValueError(_("idle_timeout must be positive (or None, for none)"))
        if not (self.tcp or self.udp):
            raise ValueError(_("serve TCP, UDP or both"))
