"""The echo server, as a pipeline of layers (one module each, in the order a byte meets them):

- `accept`: listeners and the loops that accept on them;
- `proxy`: the PROXY header a load balancer sends first (when configured);
- TLS (`trio_echo.tls`, `trio_echo.tls_stream`): the handshake and the encrypted stream;
- `transports`: the one choice of how bytes move, made at the boundary;
- `echo`: the echo loop, which sees only a transport and the exit detector;
- `web` and `websocket` (`--http`): the page and the WebSocket echo, another last layer;
- `operator` (`--metrics`): Prometheus metrics, health, readiness and identity;
- `lifecycle`: stop, drain and abort, as cancel scopes with deadlines;
- `core`: `EchoServer`, which runs each connection through the layers;
- `config`: `ServerConfig`, one frozen configuration for the CLI, `serve()` and the plugin;
- `command`: `main`, the command line (`__main__` runs it, after one precaution).

The names below are imported on first use: `python -m trio_echo.server` must be able to take
a stop signal before it has imported anything heavy (see `__main__`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trio_echo.server.command import main
    from trio_echo.server.config import (
        DEFAULT_CHUNK_SIZE,
        DEFAULT_HOST,
        DEFAULT_MAX_CONNECTIONS,
        DEFAULT_PORT,
        DEFAULT_PROXY_TIMEOUT,
        DEFAULT_SHUTDOWN_TIMEOUT,
        HttpConfig,
        MetricsConfig,
        ProxyConfig,
        ServerConfig,
        UdpConfig,
        connections_for,
    )
    from trio_echo.server.core import EchoServer, serve
    from trio_echo.server.echo import LARGE_READ, STREAK

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_HOST",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_PORT",
    "DEFAULT_PROXY_TIMEOUT",
    "DEFAULT_SHUTDOWN_TIMEOUT",
    "LARGE_READ",
    "STREAK",
    "EchoServer",
    "HttpConfig",
    "MetricsConfig",
    "ProxyConfig",
    "ServerConfig",
    "UdpConfig",
    "connections_for",
    "main",
    "serve",
]
# Where each name lives: `config` unless said otherwise.
_WHERE = {name: "config" for name in __all__} | {
    "main": "command",
    "EchoServer": "core",
    "serve": "core",
    "LARGE_READ": "echo",
    "STREAK": "echo",
}


def __getattr__(name: str) -> object:
    if name not in _WHERE:
        raise AttributeError(f"module 'trio_echo.server' has no attribute {name!r}")
    return getattr(importlib.import_module(f"trio_echo.server.{_WHERE[name]}"), name)
