"""The echo server, as a pipeline of layers (one module each, in the order a byte meets them):

- `accept`: listeners and the loops that accept on them;
- `proxy`: the PROXY header a load balancer sends first (when configured);
- TLS (`trio_echo.tls`, `trio_echo.tls_stream`): the handshake and the encrypted stream;
- `transports`: the one choice of how bytes move, made at the boundary;
- `echo`: the echo loop, which sees only a transport and the exit detector;
- `lifecycle`: stop, drain and abort, as cancel scopes with deadlines;
- `core`: `EchoServer`, which runs each connection through the layers;
- `config`: `ServerConfig`, one frozen configuration for the CLI, `serve()` and the plugin;
- `command`: `main`, the command line.
"""

from trio_echo.server.command import main
from trio_echo.server.config import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_HOST,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_PORT,
    DEFAULT_PROXY_TIMEOUT,
    DEFAULT_SHUTDOWN_TIMEOUT,
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
    "ProxyConfig",
    "ServerConfig",
    "UdpConfig",
    "connections_for",
    "main",
    "serve",
]
