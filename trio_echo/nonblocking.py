"""Writing to a non-blocking descriptor without waiting: the server's fast paths (plain TCP
in server.py, TLS in tls_stream.py) try a write first and wait only when it would block."""

from __future__ import annotations

import os

import trio


def broken(exc: OSError) -> trio.BrokenResourceError:
    """As `SocketStream` says it: the peer reset or vanished, and that is a stream error."""
    return trio.BrokenResourceError(f"socket connection broken: {exc}")


def write_now(fd: int, data: bytes | memoryview) -> bytes | memoryview:
    """Write what the descriptor takes now; the rest (b"" once all of it went)."""
    try:
        while data:
            written = os.write(fd, data)
            # The usual case, all of it, makes no view; a view spares copying the rest.
            data = b"" if written == len(data) else memoryview(data)[written:]
    except BlockingIOError:
        pass
    except OSError as exc:
        raise broken(exc) from exc
    return data
