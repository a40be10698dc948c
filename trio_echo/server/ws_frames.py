"""The WebSocket echo's fast path, sans-IO: whole single-frame messages taken straight from
the bytes read, and the server's frame of an echo made without wsproto.

Nearly every message an echo sees is one frame: FIN set, text or binary, masked, no
extension bits, no larger than the limit. wsproto parses such a frame through several layers
of generic code (its buffer, its frame decoder, its events), which cost four times what the
rest of the echo costs (scripts/bench/benchmarks.md). `FrameSplitter` parses only these,
and hands wsproto every other frame whole and in order, with what follows it (control
frames, fragments, compressed or unmasked frames, invalid UTF-8, frames past the limit):
wsproto stays the one judge of the protocol, and sees every frame it has to see at a frame
boundary. The state is O(1): the bytes of the frame being read, and whether a fragmented
message is open in wsproto.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final, final

TEXT: Final = 0x1
BINARY: Final = 0x2
_SHORT: Final = struct.Struct("!H")
_LONG: Final = struct.Struct("!Q")


@dataclass(frozen=True, slots=True)
class Whole:
    """A message of one frame, unmasked; `text` for a text message (valid UTF-8)."""

    text: bool
    payload: bytes


@dataclass(frozen=True, slots=True)
class ForWsproto:
    """Bytes for wsproto, from a frame boundary on."""

    data: bytes


@final
class FrameSplitter:
    """Bytes in (`feed`), `Whole` messages and `ForWsproto` bytes out, in order."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buffer = b""
        self._to_wsproto = 0  # bytes still owed to wsproto of a frame it has begun
        self._fragmented = False  # a message of several frames is open in wsproto
        self._passthrough = False  # a frame past the limit: wsproto refuses it, and all after

    def feed(self, data: bytes) -> list[Whole | ForWsproto]:
        if self._passthrough:
            return [ForWsproto(data)] if data else []
        buffer = self._buffer + data if self._buffer else data
        out: list[Whole | ForWsproto] = []
        start, end = 0, len(buffer)
        while start < end:
            if self._to_wsproto:
                take = min(self._to_wsproto, end - start)
                out.append(ForWsproto(buffer[start : start + take]))
                self._to_wsproto -= take
                start += take
                continue
            frame = _header(buffer, start)
            if frame is None:
                break  # the header is not whole yet
            first, size, head = frame
            opcode = first & 0x0F
            if size > self.limit and opcode < 0x8:  # wsproto refuses it at its header
                self._passthrough = True
                out.append(ForWsproto(buffer[start:]))
                self._buffer = b""
                return out
            simple = (
                first in (0x80 | TEXT, 0x80 | BINARY)
                and head in (6, 8, 14)  # masked
                and not self._fragmented
            )
            if simple and end - start < head + size:
                break  # a simple frame, not whole yet: wait for the rest
            if simple:
                at = start + head
                payload = _unmask(buffer[at - 4 : at], buffer[at : at + size])
                if opcode == BINARY or _is_utf8(payload):
                    out.append(Whole(opcode == TEXT, payload))
                    start = at + size
                    continue
                # Invalid UTF-8: wsproto's, which says 1007.
            if opcode < 0x8:  # a data frame: does a message of several frames begin or end?
                self._fragmented = not first & 0x80
            self._to_wsproto = head + size
        self._buffer = buffer[start:] if start < end else b""
        return out


def _header(buffer: bytes, start: int) -> tuple[int, int, int] | None:
    """(first byte, payload size, header size with the mask key) of the frame at `start`,
    or None if its header is not whole yet."""
    have = len(buffer) - start
    if have < 2:
        return None
    first, second = buffer[start], buffer[start + 1]
    size = second & 0x7F
    head = 2 + (4 if second & 0x80 else 0)
    if size == 126:
        if have < 4:
            return None
        size = _SHORT.unpack_from(buffer, start + 2)[0]
        head += 2
    elif size == 127:
        if have < 10:
            return None
        size = _LONG.unpack_from(buffer, start + 2)[0]
        head += 8
    if have < head:
        return None
    return first, size, head


def _unmask(key: bytes, data: bytes) -> bytes:
    """RFC 6455's masking undone, as one XOR of two big integers."""
    size = len(data)
    if not size:
        return b""
    mask = int.from_bytes((key * (size // 4 + 1))[:size], "little")
    return (int.from_bytes(data, "little") ^ mask).to_bytes(size, "little")


def _is_utf8(payload: bytes) -> bool:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def server_frame(text: bool, payload: bytes) -> bytes:
    """The server's frame of one message (unmasked, FIN, no extension)."""
    size = len(payload)
    first = 0x80 | (TEXT if text else BINARY)
    if size < 126:
        return bytes((first, size)) + payload
    if size < 1 << 16:
        return bytes((first, 126)) + _SHORT.pack(size) + payload
    return bytes((first, 127)) + _LONG.pack(size) + payload
