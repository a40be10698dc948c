"""systemd: sockets handed over at start (socket activation) and readiness notification.

Both are small protocols of environment variables, documented in sd_listen_fds(3) and
sd_notify(3); the few lines here follow them rather than adding a dependency:

- socket activation: with `LISTEN_PID` equal to our pid and `LISTEN_FDS` = n, descriptors 3
  to 3 + n - 1 are sockets already bound (and, for streams, listening) by systemd, which can
  bind port 7 for a server that has no privilege at all. The variables are then removed, so
  that no child takes the sockets for its own.
- notification: with `NOTIFY_SOCKET` set (a Unix datagram socket's path, `@` for the abstract
  namespace), `READY=1` once serving, `STATUS=...` as it goes, `STOPPING=1` when stopping.
"""

from __future__ import annotations

import os
import socket
from typing import Final

LISTEN_FDS_START: Final = 3


def listen_sockets() -> list[socket.socket]:
    """The sockets systemd handed this process (none if it handed none), non-blocking."""
    try:
        if int(os.environ.get("LISTEN_PID", "0")) != os.getpid():
            return []
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    finally:
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(name, None)
    socks = []
    for fd in range(LISTEN_FDS_START, LISTEN_FDS_START + count):
        sock = socket.socket(fileno=fd)  # family and type are read from the descriptor
        sock.setblocking(False)
        socks.append(sock)
    return socks


def notify(state: str) -> bool:
    """Tell the service manager `state` (e.g. "READY=1"); False if none is listening."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(state.encode(), address)
        except OSError:
            return False
    return True
