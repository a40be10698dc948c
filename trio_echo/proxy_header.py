"""The PROXY protocol's header, as HAProxy's specification defines it (proxy-protocol.txt):
sans-IO, incremental and bounded.

A load balancer that accepts a client's connection opens one of its own to the server and
sends this header first, so that the server learns who the client really is: version 1 is a
line of text (at most 107 bytes), version 2 a binary block (16 bytes and at most 65,535
more). `ProxyHeaderReader.feed` takes bytes as they come and answers: None (more are
needed), a `ProxyHeader` (and `rest`: what followed the header in the same reads, which
belongs to the echo), or `BadProxyHeader` saying why the bytes cannot be one.

`build_v1` and `build_v2` make headers (for the client's and the check's `--send-proxy`).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass
from typing import Final, final

from trio_echo.events import Words, says
from trio_echo.i18n import N_

V1_PREFIX: Final = b"PROXY "
V1_MAX: Final = 107
V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED: Final = 16
_V2_ADDRESSES: Final = {  # family and transport byte: (name, address block length)
    0x00: ("UNSPEC", 0),
    0x11: ("TCP4", 12),
    0x12: ("UDP4", 12),
    0x21: ("TCP6", 36),
    0x22: ("UDP6", 36),
    0x31: ("UNIX_STREAM", 216),
    0x32: ("UNIX_DGRAM", 216),
}

Address = tuple[str, int]


class BadProxyHeader(ValueError):
    """Bytes that cannot be a PROXY header; `words` say why."""

    def __init__(self, words: Words) -> None:
        super().__init__(words.text.format(**dict(words.args)))  # in English
        self.words = words


@dataclass(frozen=True)
class ProxyHeader:
    version: int
    family: str  # TCP4, TCP6, UNKNOWN (v1); UNSPEC, TCP4, UDP4, TCP6, UDP6, UNIX_* (v2)
    source: Address | str | None  # None: use the connection's own (LOCAL, UNKNOWN, UNSPEC)
    destination: Address | str | None
    local: bool = False  # v2 LOCAL: the balancer's own connection (a health check)
    tlvs: tuple[tuple[int, bytes], ...] = ()


@final
class ProxyHeaderReader:
    def __init__(self) -> None:
        self._buffer = bytearray()
        self.rest = b""

    def feed(self, data: bytes) -> ProxyHeader | None:
        self._buffer += data
        buffer = bytes(self._buffer)
        if not buffer:
            return None
        if buffer[:1] == b"P":
            return self._v1(buffer)
        if buffer[:1] == b"\r":
            return self._v2(buffer)
        raise BadProxyHeader(says("not_proxy", N_("not a PROXY header")))

    def wanted(self) -> int:
        """The most bytes that can still belong to the header. Reading no more than this
        keeps what an unfinished header holds to what it declared and sent: a version 2
        header's length is known from its 16th byte on."""
        size = len(self._buffer)
        if size < V2_FIXED:
            return V2_FIXED - size
        if self._buffer[:1] == b"P":
            return max(1, V1_MAX - size)
        declared = int.from_bytes(self._buffer[14:16], "big")
        return max(1, V2_FIXED + declared - size)

    def _done(self, header: ProxyHeader, length: int) -> ProxyHeader:
        self.rest = bytes(self._buffer[length:])
        self._buffer.clear()
        return header

    # ---- version 1: "PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n" -------------------

    def _v1(self, buffer: bytes) -> ProxyHeader | None:
        if not buffer.startswith(V1_PREFIX[: len(buffer)]):
            raise BadProxyHeader(says("not_proxy", N_("not a PROXY header")))
        end = buffer.find(b"\r\n", 0, V1_MAX)
        if end < 0:
            if len(buffer) >= V1_MAX or b"\n" in buffer:
                raise BadProxyHeader(
                    says("v1_no_crlf", N_("a version 1 header must end with CRLF within 107 bytes"))
                )
            return None
        try:
            line = buffer[:end].decode("ascii")
        except UnicodeDecodeError:
            ascii_only = says("v1_not_ascii", N_("a version 1 header is ASCII text"))
            raise BadProxyHeader(ascii_only) from None
        parts = line.split(" ")
        if len(parts) >= 2 and parts[1] == "UNKNOWN":
            return self._done(ProxyHeader(1, "UNKNOWN", None, None), end + 2)
        if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
            raise BadProxyHeader(
                says(
                    "v1_syntax",
                    N_("a version 1 header is PROXY TCP4|TCP6 SOURCE DESTINATION SPORT DPORT"),
                )
            )
        version = 4 if parts[1] == "TCP4" else 6
        source = (_address(parts[2], version), _port(parts[4]))
        destination = (_address(parts[3], version), _port(parts[5]))
        return self._done(ProxyHeader(1, parts[1], source, destination), end + 2)

    # ---- version 2: a signature, then version/command, family, length, addresses, TLVs ----

    def _v2(self, buffer: bytes) -> ProxyHeader | None:
        signature = buffer[: len(V2_SIGNATURE)]
        if signature != V2_SIGNATURE[: len(signature)]:
            raise BadProxyHeader(says("not_proxy", N_("not a PROXY header")))
        if len(buffer) < V2_FIXED:
            return None
        version, command = buffer[12] >> 4, buffer[12] & 0x0F
        if version != 2:
            raise BadProxyHeader(
                says("v2_version", N_("version {version} in a version 2 header"), version=version)
            )
        if command not in (0, 1):
            raise BadProxyHeader(
                says(
                    "v2_command",
                    N_("unknown command {command} (only LOCAL and PROXY exist)"),
                    command=command,
                )
            )
        length = struct.unpack_from("!H", buffer, 14)[0]
        if len(buffer) < V2_FIXED + length:
            return None
        block = buffer[V2_FIXED : V2_FIXED + length]
        if command == 0:  # LOCAL: the balancer's own connection; addresses are ignored
            header = ProxyHeader(2, "UNSPEC", None, None, local=True)
            return self._done(header, V2_FIXED + length)
        family = _V2_ADDRESSES.get(buffer[13])
        if family is None:
            raise BadProxyHeader(
                says(
                    "v2_family",
                    N_("unknown address family and transport 0x{value:02x}"),
                    value=buffer[13],
                )
            )
        name, size = family
        if length < size:
            raise BadProxyHeader(
                says(
                    "v2_short",
                    N_("{name} needs {size} bytes of addresses, the header has {length}"),
                    name=name,
                    size=size,
                    length=length,
                )
            )
        source, destination = _v2_addresses(name, block[:size])
        header = ProxyHeader(2, name, source, destination, tlvs=_tlvs(block[size:]))
        return self._done(header, V2_FIXED + length)


def _address(text: str, version: int) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise BadProxyHeader(
            says("bad_address", N_("{text!r} is not an IP address"), text=text)
        ) from None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        # `ipaddress` takes any text after a `%` as the zone, control bytes too: a balancer
        # never sends one, and the address would carry them into the log.
        raise BadProxyHeader(
            says(
                "zone",
                N_("{text!r} names a zone, which a PROXY header's address cannot"),
                text=text,
            )
        )
    if address.version != version:
        raise BadProxyHeader(
            says(
                "wrong_family",
                N_("{text!r} is not an IPv{version} address"),
                text=text,
                version=version,
            )
        )
    return str(address)


def _port(text: str) -> int:
    if not text.isdigit() or len(text) > 5 or int(text) > 65535 or text != str(int(text)):
        raise BadProxyHeader(says("bad_port", N_("{text!r} is not a port number"), text=text))
    return int(text)


def _v2_addresses(name: str, block: bytes) -> tuple[Address | str | None, Address | str | None]:
    if name == "UNSPEC":
        return None, None
    if name.startswith("UNIX"):
        paths = (block[:108].split(b"\0", 1)[0], block[108:216].split(b"\0", 1)[0])
        return paths[0].decode(errors="replace"), paths[1].decode(errors="replace")
    width = 4 if name.endswith("4") else 16
    # Written as ipaddress writes them (as version 1's are): one spelling for one address.
    source = str(ipaddress.ip_address(block[:width]))
    destination = str(ipaddress.ip_address(block[width : 2 * width]))
    sport, dport = struct.unpack_from("!HH", block, 2 * width)
    return (source, sport), (destination, dport)


def _tlvs(data: bytes) -> tuple[tuple[int, bytes], ...]:
    found = []
    at = 0
    while at < len(data):
        if at + 3 > len(data):
            raise BadProxyHeader(says("tlv_short", N_("a TLV is cut short")))
        kind, size = data[at], struct.unpack_from("!H", data, at + 1)[0]
        if at + 3 + size > len(data):
            raise BadProxyHeader(says("tlv_overrun", N_("a TLV runs past the end of the header")))
        found.append((kind, bytes(data[at + 3 : at + 3 + size])))
        at += 3 + size
    return tuple(found)


# ---- making headers ---------------------------------------------------------------------


def build_v1(source: Address, destination: Address) -> bytes:
    version = ipaddress.ip_address(source[0]).version
    family = "TCP4" if version == 4 else "TCP6"
    return (f"PROXY {family} {source[0]} {destination[0]} {source[1]} {destination[1]}\r\n").encode(
        "ascii"
    )


def build_v2(
    source: Address | None,
    destination: Address | None,
    *,
    tlvs: tuple[tuple[int, bytes], ...] = (),
) -> bytes:
    """A version 2 header: PROXY with TCP addresses, or LOCAL when `source` is None."""
    tail = b"".join(bytes([kind]) + struct.pack("!H", len(value)) + value for kind, value in tlvs)
    if source is None or destination is None:
        return V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", len(tail)) + tail
    version = ipaddress.ip_address(source[0]).version
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    block = (
        socket.inet_pton(family, source[0])
        + socket.inet_pton(family, destination[0])
        + struct.pack("!HH", source[1], destination[1])
    )
    kind = 0x11 if version == 4 else 0x21
    body = block + tail
    return V2_SIGNATURE + bytes([0x21, kind]) + struct.pack("!H", len(body)) + body
