"""How the echo loop moves a connection's bytes: one interface, chosen once per connection.

The echo loop (`echo.py`) never asks what a stream is. `transport_for` looks once, at the
boundary, and gives it a `Transport`: over a socket (after a PROXY header too), reads and
writes are simply tried on the non-blocking socket, waiting (`wait_readable`,
`wait_writable`) only when it would block; over TLS the same, through OpenSSL's buffers;
over any other trio stream (in-memory ones, in tests), `receive_some` and `send_all`. Each
transport counts the bytes that left (`Connection.bytes_out`) and owns its polite close.
"""

from __future__ import annotations

import math
from typing import Final, Protocol, final

import trio

from trio_echo.events import DisconnectReason
from trio_echo.nonblocking import RawSocket
from trio_echo.replay import ReplayStream, unwrap
from trio_echo.server.lifecycle import LINGER_SECONDS, Connection
from trio_echo.tls_stream import ServerTlsStream

# The ends after which a plain connection half-closes and lingers (see `LINGER_SECONDS`):
# the client may still be sending, and a close with unread bytes would send a RST.
_LINGER_ENDS: Final[frozenset[DisconnectReason]] = frozenset({"exit", "shutdown"})
# The ends after which a TLS connection sends a close_notify; after the others (the peer
# broke the connection, or never completed a handshake) it is simply closed.
_POLITE_TLS_ENDS: Final[frozenset[DisconnectReason]] = frozenset(
    {"exit", "eof", "shutdown", "timeout"}
)


class Transport(Protocol):
    """One connection's bytes, for one task at a time."""

    @property
    def reads_without_checkpoint(self) -> bool:
        """True when `read_now` takes no checkpoint: the loop must take one, now and then."""

    def read_now(self) -> bytes | None:
        """A read if bytes (or the end, b"") are there without waiting, else None."""

    async def receive(self) -> bytes | None:
        """The next read (b"" at the end), or None after the idle timeout."""

    def send_now(self, data: bytes) -> bool:
        """Send what goes without waiting; True if that was all of `data`."""

    async def send_rest(self) -> None:
        """Wait until the rest of the last `send_now` is sent (or this is cancelled)."""

    @property
    def unsent(self) -> int:
        """Bytes of the last `send_now` not sent yet."""

    async def close(self, reason: DisconnectReason) -> None:
        """Close the connection, politely after the ends that allow it. Call it shielded
        (`Lifecycle.closing`): it always closes, even when that scope is cancelled."""


def transport_for(
    stream: trio.abc.Stream, conn: Connection, size: int, idle: float | None
) -> Transport:
    """The transport for the stream the layers before the echo produced."""
    if isinstance(stream, ServerTlsStream):
        return _TlsIO(stream, conn, size, idle)
    base = stream.inner if isinstance(stream, ReplayStream) else stream
    if isinstance(base, trio.SocketStream) and isinstance(stream, trio.abc.HalfCloseableStream):
        _, first = unwrap(stream)
        return _SocketIO(base, conn, size, idle, first)
    assert isinstance(stream, trio.abc.HalfCloseableStream)
    return _StreamIO(stream, conn, size, idle)


async def _close_plain(
    stream: trio.abc.HalfCloseableStream, size: int, reason: DisconnectReason
) -> None:
    """After the ends that allow it, half-close and drop what the client still sends until
    it closes or the linger passes; then close."""
    try:
        if reason in _LINGER_ENDS:
            await stream.send_eof()
            with trio.move_on_after(LINGER_SECONDS):
                while await stream.receive_some(size):
                    pass
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await trio.aclose_forcefully(stream)


@final
class _SocketIO:
    """A socket's bytes by non-blocking reads and writes (`nonblocking.RawSocket`): a busy
    connection costs a system call per read and per write, plus the loop's checkpoint."""

    __slots__ = ("_conn", "_fd", "_first", "_idle_timeout", "_raw", "_size", "_stream", "_unsent")
    reads_without_checkpoint: Final = True

    def __init__(
        self,
        stream: trio.SocketStream,
        conn: Connection,
        size: int,
        idle: float | None,
        first: bytes,
    ) -> None:
        self._stream = stream
        self._raw = RawSocket(stream.socket)  # the stream's own socket, non-blocking
        self._fd = self._raw.fd
        self._conn = conn
        self._size = size
        self._idle_timeout = idle
        self._unsent: bytes | memoryview = b""
        self._first = first  # read by a layer before the echo (past a PROXY header)

    def read_now(self) -> bytes | None:
        if self._first:
            data, self._first = self._first[: self._size], self._first[self._size :]
            return data
        return self._raw.read_now(self._size)

    async def receive(self) -> bytes | None:
        while True:
            data = self.read_now()
            if data is not None:
                return data
            if self._idle_timeout is None:
                await trio.lowlevel.wait_readable(self._fd)
                continue
            with trio.move_on_after(self._idle_timeout):
                await trio.lowlevel.wait_readable(self._fd)
                continue
            return None

    def send_now(self, data: bytes) -> bool:
        self._unsent = data
        return self._write()

    async def send_rest(self) -> None:
        while not self._write():
            await trio.lowlevel.wait_writable(self._fd)

    @property
    def unsent(self) -> int:
        return len(self._unsent)

    def _write(self) -> bool:
        before = len(self._unsent)
        self._unsent = self._raw.write_now(self._unsent)
        self._conn.bytes_out += before - len(self._unsent)
        return not self._unsent

    async def close(self, reason: DisconnectReason) -> None:
        await _close_plain(self._stream, self._size, reason)


@final
class _StreamIO:
    """The same over any other half-closeable trio stream: every read is a `receive_some`,
    a checkpoint of its own."""

    __slots__ = ("_conn", "_idle_timeout", "_size", "_stream", "_unsent")
    reads_without_checkpoint: Final = False

    def __init__(
        self, stream: trio.abc.HalfCloseableStream, conn: Connection, size: int, idle: float | None
    ) -> None:
        self._stream = stream
        self._conn = conn
        self._size = size
        self._idle_timeout = idle
        self._unsent = b""

    def read_now(self) -> bytes | None:
        return None  # only `receive_some` can tell

    async def receive(self) -> bytes | None:
        if self._idle_timeout is None:
            return bytes(await self._stream.receive_some(self._size))
        with trio.move_on_after(self._idle_timeout):
            return bytes(await self._stream.receive_some(self._size))
        return None

    def send_now(self, data: bytes) -> bool:
        self._unsent = data
        return not data

    async def send_rest(self) -> None:
        await self._stream.send_all(self._unsent)
        self._conn.bytes_out += len(self._unsent)
        self._unsent = b""

    @property
    def unsent(self) -> int:
        return len(self._unsent)

    async def close(self, reason: DisconnectReason) -> None:
        await _close_plain(self._stream, self._size, reason)


@final
class _TlsIO:
    """The same over TLS (`ServerTlsStream`), plaintext in and out; an echo counts as sent
    once all of its ciphertext is."""

    __slots__ = ("_conn", "_idle_timeout", "_sending", "_size", "_stream")
    reads_without_checkpoint: Final = True  # plaintext OpenSSL already holds: no checkpoint

    def __init__(
        self, stream: ServerTlsStream, conn: Connection, size: int, idle: float | None
    ) -> None:
        self._stream = stream
        self._conn = conn
        self._size = size
        self._idle_timeout = idle
        self._sending = 0

    def read_now(self) -> bytes | None:
        return self._stream.read_now(self._size)

    async def receive(self) -> bytes | None:
        # One deadline for the whole wait: records that carry no data (KeyUpdates, alerts)
        # do not make a client less idle.
        idle = math.inf if self._idle_timeout is None else self._idle_timeout
        with trio.move_on_after(idle):
            while True:
                await self._stream.fill()
                data = self._stream.read_now(self._size)
                if data is not None:
                    return data
        return None

    def send_now(self, data: bytes) -> bool:
        if self._stream.send_now(data):
            self._conn.bytes_out += len(data)
            return True
        self._sending = len(data)
        return False

    async def send_rest(self) -> None:
        await self._stream.flush()
        self._conn.bytes_out += self._sending
        self._sending = 0

    @property
    def unsent(self) -> int:
        return self._stream.unsent

    async def close(self, reason: DisconnectReason) -> None:
        if reason in _POLITE_TLS_ENDS:
            await self._stream.close_politely(LINGER_SECONDS)  # closes in any case
        else:
            await trio.aclose_forcefully(self._stream)
