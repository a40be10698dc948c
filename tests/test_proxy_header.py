"""The PROXY header parser against headers built to the specification, cut at every byte,
and against garbage and truncation: it never answers wrongly, and it never holds more than a
header's worth."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.streams import split
from trio_echo.proxy_header import (
    V1_MAX,
    V2_SIGNATURE,
    BadProxyHeader,
    ProxyHeader,
    ProxyHeaderReader,
    build_v1,
    build_v2,
)

ports = st.integers(min_value=0, max_value=65535)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
endpoints = st.one_of(
    st.tuples(st.tuples(ipv4, ports), st.tuples(ipv4, ports)),
    st.tuples(st.tuples(ipv6, ports), st.tuples(ipv6, ports)),
)
tlvs = st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=40)), max_size=4).map(tuple)
cuts = st.lists(st.integers(min_value=0, max_value=300), max_size=20)


def read(data: bytes, cut_at: list[int]) -> tuple[ProxyHeader | None, bytes]:
    reader = ProxyHeaderReader()
    pieces = split(data, cut_at)
    for index, piece in enumerate(pieces):
        header = reader.feed(piece)
        if header is not None:
            return header, reader.rest + b"".join(pieces[index + 1 :])
    return None, b""


@given(ends=endpoints, version=st.sampled_from([1, 2]), extra=tlvs, after=st.binary(max_size=50),
       cut_at=cuts)  # fmt: skip
def test_a_header_cut_anywhere_is_read_whole_and_what_follows_is_kept(
    ends: tuple[tuple[str, int], tuple[str, int]],
    version: int,
    extra: tuple[tuple[int, bytes], ...],
    after: bytes,
    cut_at: list[int],
) -> None:
    source, destination = ends
    raw = (
        build_v1(source, destination) if version == 1 else build_v2(source, destination, tlvs=extra)
    )
    header, rest = read(raw + after, cut_at)
    assert header is not None
    assert (header.version, header.source, header.destination) == (version, source, destination)
    assert header.family == ("TCP4" if ":" not in source[0] else "TCP6")
    if version == 2:
        assert header.tlvs == extra
    assert rest == after  # not a byte lost or duplicated


@given(raw=st.binary(min_size=1, max_size=200), cut_at=cuts)
def test_truncated_headers_ask_for_more_and_never_answer_wrongly(
    raw: bytes, cut_at: list[int]
) -> None:
    for full in (build_v1(("192.0.2.1", 1), ("198.51.100.2", 2)), build_v2(("::1", 3), ("::2", 4))):
        for length in range(len(full)):  # every proper prefix: more is needed
            assert ProxyHeaderReader().feed(full[:length]) is None
    try:
        header, _ = read(raw, cut_at)
    except BadProxyHeader:
        return
    # Whatever random bytes are taken for a header must really be one.
    assert header is None or raw.startswith((b"PROXY ", V2_SIGNATURE))


def test_an_ipv4_mapped_address_is_spelled_one_way() -> None:
    """Found by hypothesis in CI: inet_ntop writes ::ffff:0.0.0.0 where ipaddress writes
    ::ffff:0:0; the reader now spells v2 addresses as version 1's are."""
    header = ProxyHeaderReader().feed(build_v2(("::ffff:0:0", 1), ("::", 0)))
    assert header is not None
    assert header.source == ("::ffff:0:0", 1)


def test_local_unknown_unspec_and_unix() -> None:
    local = ProxyHeaderReader().feed(build_v2(None, None) + b"data")
    assert local is not None
    assert local.local
    assert local.source is None
    unknown = ProxyHeaderReader().feed(b"PROXY UNKNOWN whatever\r\n")
    assert unknown is not None
    assert unknown.family == "UNKNOWN"
    assert unknown.source is None
    unspec = ProxyHeaderReader().feed(V2_SIGNATURE + b"\x21\x00\x00\x00")
    assert unspec is not None
    assert unspec.family == "UNSPEC"
    assert not unspec.local
    paths = b"/run/client".ljust(108, b"\0") + b"/run/server".ljust(108, b"\0")
    unix = ProxyHeaderReader().feed(
        V2_SIGNATURE + b"\x21\x31" + len(paths).to_bytes(2, "big") + paths
    )
    assert unix is not None
    assert (unix.source, unix.destination) == ("/run/client", "/run/server")


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"hello\n", "not a PROXY header"),
        (b"GET / HTTP/1.1\r\n", "not a PROXY header"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "CRLF"),
        (b"PROXY " + b"x" * V1_MAX, "within 107 bytes"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n", "not a port"),
        (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "not an IPv4 address"),
        (b"PROXY TCP9 1 2 3 4\r\n", "TCP4|TCP6"),
        (V2_SIGNATURE + b"\x31\x11\x00\x0c" + bytes(12), "version 3"),
        (V2_SIGNATURE + b"\x25\x11\x00\x0c" + bytes(12), "unknown command 5"),
        (V2_SIGNATURE + b"\x21\x44\x00\x00", "unknown address family"),
        (V2_SIGNATURE + b"\x21\x11\x00\x04" + bytes(4), "needs 12 bytes"),
        (V2_SIGNATURE + b"\x21\x11\x00\x0e" + bytes(12) + b"\x01\x00", "cut short"),
        (V2_SIGNATURE + b"\x21\x11\x00\x10" + bytes(12) + b"\x01\x00\x09\x00", "runs past"),
    ],
)
def test_bad_headers_say_what_is_wrong(data: bytes, words: str) -> None:
    with pytest.raises(BadProxyHeader, match=words.replace("|", r"\|")):
        ProxyHeaderReader().feed(data)


def test_an_ipv6_zone_is_refused_so_that_no_control_byte_reaches_the_log() -> None:
    """`ipaddress` takes anything after `%` as a zone: from a client where --proxy-trusted is
    unset, escape sequences would ride into the text log as the peer (issue 24, 7)."""
    hostile = b"PROXY TCP6 ::1%\x1b]0;pwned\x07\rFAKE ::1 1 2\r\n"
    with pytest.raises(BadProxyHeader) as refused:
        ProxyHeaderReader().feed(hostile)
    assert refused.value.words.code == "zone"


ADDRESS_TEXT = st.tuples(
    st.sampled_from(["::1", "fe80::1", "2001:db8::7", "1.2.3.4"]),
    st.one_of(st.just(""), st.text(st.characters(max_codepoint=127), max_size=12).map("%".__add__)),
).map("".join)


@given(text=ADDRESS_TEXT)
def test_every_address_a_header_gives_is_plain_printable_ascii(text: str) -> None:
    for family in ("TCP6", "TCP4"):
        other = "::1" if family == "TCP6" else "1.2.3.4"
        try:
            header = ProxyHeaderReader().feed(f"PROXY {family} {text} {other} 1 2\r\n".encode())
        except BadProxyHeader:
            continue
        assert header is not None
        assert isinstance(header.source, tuple)
        host = header.source[0]
        assert host.isascii()
        assert host.isprintable()
        assert "%" not in host


@given(length=st.integers(min_value=12, max_value=65535), sent=st.integers(min_value=0))
def test_an_unfinished_v2_header_is_read_no_further_than_it_declared(
    length: int, sent: int
) -> None:
    """What an unfinished header holds is bounded by what it declared and sent, not by the
    largest a header can be (issue 24, 18)."""
    header = V2_SIGNATURE + bytes([0x21, 0x11]) + length.to_bytes(2, "big")
    reader = ProxyHeaderReader()
    assert reader.wanted() == 16
    assert reader.feed(header) is None
    assert reader.wanted() == length
    body = bytes(min(sent % (length + 1), length - 1))
    if body:
        assert reader.feed(body) is None
    assert reader.wanted() == length - len(body)
