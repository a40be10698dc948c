"""A connected socket's reads and writes tried at once, without waiting: the server's fast
paths (plain TCP in server.py, TLS in tls_stream.py) try a read or a write first and wait
(`trio.lowlevel.wait_readable` / `wait_writable`, which take the descriptor or, on Windows,
the socket handle) only when it would block.

Where sockets are file descriptors (every POSIX system: `capabilities`), the calls are
`os.read` and `os.write` on the descriptor. Elsewhere (Windows, or ``TRIO_ECHO_PORTABLE=1``)
they are the standard library's `recv` and `send`, on a socket object that borrows trio's
socket by its handle and never closes it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from functools import partial
from typing import final

import trio

from trio_echo import capabilities


def broken(exc: OSError) -> trio.BrokenResourceError:
    """As `SocketStream` says it: the peer reset or vanished, and that is a stream error."""
    return trio.BrokenResourceError(f"socket connection broken: {exc}")


class _Borrowed(socket.socket):
    """Another owner's socket (trio's), by its handle, for calls that never wait. It never
    closes the socket: that stays the owner's, when this object goes and when the owner
    closes it first."""

    __slots__ = ()

    def __del__(self) -> None:
        self.detach()


@final
class RawSocket:
    """Non-blocking reads and writes on a connected trio socket (trio made it non-blocking)."""

    __slots__ = ("fd", "read", "write")

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.fd = sock.fileno()  # what trio's waits take, on every platform
        self.read: Callable[[int], bytes]
        self.write: Callable[[bytes | memoryview], int]
        if capabilities.sockets_are_descriptors():
            self.read, self.write = partial(os.read, self.fd), partial(os.write, self.fd)
        else:
            borrowed = _Borrowed(fileno=self.fd)
            self.read, self.write = borrowed.recv, borrowed.send

    def read_now(self, size: int) -> bytes | None:
        """A read if the socket has bytes (or its end: b""), else None, without waiting."""
        try:
            return self.read(size)
        except BlockingIOError:
            return None
        except OSError as exc:
            raise broken(exc) from exc

    def write_now(self, data: bytes | memoryview) -> bytes | memoryview:
        """Write what the socket takes now; the rest (b"" once all of it went)."""
        try:
            while data:
                written = self.write(data)
                # The usual case, all of it, makes no view; a view spares copying the rest.
                data = b"" if written == len(data) else memoryview(data)[written:]
        except BlockingIOError:
            pass
        except OSError as exc:
            raise broken(exc) from exc
        return data
