"""trio-echo: a TCP echo server and client on trio, correct at every byte and observable.

The small public API: `serve` / `EchoServer` run the server in-process (``await
nursery.start(serve, ServerConfig(port=0))`` hands back the running server with its bound
addresses), `ServerConfig` (with `ProxyConfig`, `UdpConfig`, `HttpConfig`) is what it is told, and
`ExitDetector` is the sans-IO rule for the `exit` command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from trio_echo.protocol import ExitDetector
    from trio_echo.server import (
        EchoServer,
        HttpConfig,
        ProxyConfig,
        ServerConfig,
        UdpConfig,
        serve,
    )

_SERVER_NAMES = ("EchoServer", "HttpConfig", "ProxyConfig", "ServerConfig", "UdpConfig", "serve")
__all__ = [
    "EchoServer",
    "ExitDetector",
    "HttpConfig",
    "ProxyConfig",
    "ServerConfig",
    "UdpConfig",
    "__version__",
    "serve",
]


def __getattr__(name: str) -> object:
    # Imported on first use, so that `python -m trio_echo.server` does not find its own
    # module already imported by the package (runpy warns about that).
    if name in _SERVER_NAMES:
        from trio_echo import server

        return getattr(server, name)
    if name == "ExitDetector":
        from trio_echo.protocol import ExitDetector

        return ExitDetector
    raise AttributeError(f"module 'trio_echo' has no attribute {name!r}")
