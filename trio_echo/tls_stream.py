"""The server's TLS stream: OpenSSL driven through memory buffers by our own reads and writes.

trio's `SSLStream` is general: any number of tasks may send and receive at once, so each
call takes locks, checks for conflicts and loops through a retry machine. The echo loop
needs none of that: one task reads, then writes, in turn, and that generality cost more than
the cryptography (scripts/bench/benchmarks.md). `ServerTlsStream` does what the echo needs
and no more, in the same way as the plain path (`server/transports.py`): try the read or
write on the non-blocking socket first (`nonblocking.RawSocket`), wait (`wait_readable`,
`wait_writable`) only when it would block. Over a stream that is not a socket (trio's
memory streams, in tests) it moves the same bytes through `receive_some` and `send_all`.

Not for concurrent use: one task calls it at a time (the connection's). Renegotiation is
refused (`OP_NO_RENEGOTIATION`), so a read never has to wait to write, nor a write to read;
what a read makes OpenSSL send (a TLS 1.3 KeyUpdate answer) is sent with the next write.
"""

from __future__ import annotations

import contextlib
import ssl
from typing import Final, final

import trio

from trio_echo.nonblocking import RawSocket
from trio_echo.replay import unwrap

RAW_READ: Final = 65536  # ciphertext per read from the socket: up to four full records
HEAD_BYTES: Final = 32
MAX_OWED: Final = 256 * 1024  # TLS's own records (not echoes) a peer may leave unread


class LeftUnread(trio.BrokenResourceError):
    """The peer took none of the MAX_OWED bytes of TLS's own records (KeyUpdate answers)
    waiting for it while it sent more: it is not reading, and we stopped buffering for it."""


def _broken(exc: BaseException) -> trio.BrokenResourceError:
    error = trio.BrokenResourceError(f"TLS connection broken: {exc}")
    error.__cause__ = exc
    return error


@final
class ServerTlsStream(trio.abc.Stream):
    """TLS, server side, over a connected stream; `do_handshake` first."""

    def __init__(self, transport: trio.abc.HalfCloseableStream, context: ssl.SSLContext) -> None:
        # Bytes a layer before this one read past its part (a PROXY header's reader) are the
        # handshake's first: taken now, and the socket under them driven directly.
        transport, replayed = unwrap(transport)
        self.transport = transport
        self._raw = (
            RawSocket(transport.socket) if isinstance(transport, trio.SocketStream) else None
        )
        self._fd = None if self._raw is None else self._raw.fd
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._unsent: bytes | memoryview = b""  # ciphertext the socket has not taken yet
        self.head = b""  # the peer's first bytes, to explain a failed handshake
        if replayed:
            self._take(replayed)

    # ---- what the TLS session is --------------------------------------------------------

    def version(self) -> str | None:
        return self._ssl.version()

    def cipher(self) -> tuple[str, str, int] | None:
        return self._ssl.cipher()

    def peer_certificate(self) -> bytes | None:
        return self._ssl.getpeercert(binary_form=True) or None

    @property
    def unsent(self) -> int:
        return len(self._unsent) + self._outgoing.pending

    # ---- ciphertext in and out ----------------------------------------------------------

    def _take(self, data: bytes) -> None:
        if len(self.head) < HEAD_BYTES:
            self.head += data[: HEAD_BYTES - len(self.head)]
        if data:
            self._incoming.write(data)
        else:
            self._incoming.write_eof()

    def _fill_now(self) -> bool:
        """Read ciphertext the socket has, without waiting; False if it has none yet."""
        assert self._raw is not None
        try:
            data = self._raw.read(RAW_READ)
        except BlockingIOError:
            return False
        except OSError as exc:
            raise _broken(exc) from exc
        self._take(data)
        return True

    async def fill(self) -> None:
        """Wait for ciphertext and take it. For when `read_now` said None: it found the
        socket empty, so this waits first."""
        if self._fd is None:
            self._take(bytes(await self.transport.receive_some(RAW_READ)))
            return
        while True:
            await trio.lowlevel.wait_readable(self._fd)
            if self._fill_now():
                return

    def _flush_now(self) -> bool:
        """Write what OpenSSL made without waiting; True if all of it went."""
        if self._outgoing.pending:
            made = self._outgoing.read()
            self._unsent = bytes(self._unsent) + made if self._unsent else made
        if self._raw is not None and self._unsent:
            self._unsent = self._raw.write_now(self._unsent)
        return not self._unsent

    async def flush(self) -> None:
        """Send everything OpenSSL made (or be cancelled trying)."""
        if self._fd is None:
            self._flush_now()
            data, self._unsent = self._unsent, b""
            await self.transport.send_all(data)
            return
        while not self._flush_now():
            await trio.lowlevel.wait_writable(self._fd)

    # ---- the handshake ------------------------------------------------------------------

    async def do_handshake(self) -> None:
        """The handshake; `trio.BrokenResourceError` (its cause OpenSSL's error) if it fails."""
        while True:
            try:
                self._ssl.do_handshake()
            except ssl.SSLWantReadError:
                await self.flush()
                if self._fd is None or not self._fill_now():
                    await self.fill()
                continue
            except ssl.SSLError as exc:
                # OpenSSL wrote an alert saying why (unknown CA, no certificate...): send it
                # if the socket takes it now, so that the peer can tell its user.
                with contextlib.suppress(trio.BrokenResourceError):
                    self._flush_now()
                raise _broken(exc) from exc
            await self.flush()  # our last flight (and TLS 1.3 session tickets)
            return

    # ---- plaintext ----------------------------------------------------------------------

    def read_now(self, size: int) -> bytes | None:
        """Up to `size` bytes of plaintext (b"" after the peer's close_notify) if there are
        some without waiting, else None. A close without close_notify is broken (truncated).

        What the records read make OpenSSL send (the refusal of a renegotiation, a KeyUpdate
        answer) is sent at once, as far as the socket takes it; a peer that takes none of it
        while making more (a KeyUpdate flood, never reading) is broken off once MAX_OWED
        bytes wait, instead of growing the buffer without bound."""
        while True:
            try:
                return self._ssl.read(size)
            except ssl.SSLWantReadError:
                if self._outgoing.pending:
                    self._flush_now()
                    if self.unsent > MAX_OWED:
                        raise LeftUnread(self.unsent) from None
                if self._fd is None or not self._fill_now():
                    return None
            except ssl.SSLError as exc:
                raise _broken(exc) from exc

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        size = RAW_READ if max_bytes is None else max_bytes
        while (data := self.read_now(size)) is None:
            await self.fill()
        return data

    def send_now(self, data: bytes) -> bool:
        """Encrypt `data` and write what the socket takes; True if that was all of it."""
        if data:
            try:
                self._ssl.write(data)
            except ssl.SSLError as exc:
                raise _broken(exc) from exc
        return self._flush_now()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if not self.send_now(bytes(data)):
            await self.flush()

    async def wait_send_all_might_not_block(self) -> None:
        if self._fd is None:
            await self.transport.wait_send_all_might_not_block()
        else:
            await trio.lowlevel.wait_writable(self._fd)

    # ---- the end ------------------------------------------------------------------------

    async def close_politely(self, linger: float) -> None:
        """close_notify, then a half-close of TCP, then drop what the peer still sends until
        it closes too or `linger` seconds pass, then close: so that no RST destroys what is
        still on its way to the peer. Records of the peer's that were not read make OpenSSL
        refuse to wait for the peer's own close_notify, but our close_notify is made anyway,
        and sent; theirs is not waited for."""
        try:
            # It then wants to read the peer's close_notify, or finds unread records: an error.
            with contextlib.suppress(ssl.SSLError):
                self._ssl.unwrap()
            with trio.move_on_after(linger):
                await self.flush()
                await self.transport.send_eof()
                while await self.transport.receive_some(RAW_READ):
                    pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(self.transport)

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.transport)
