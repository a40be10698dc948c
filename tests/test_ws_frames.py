"""The WebSocket fast path (`ws_frames.FrameSplitter`), sans-IO: whatever a client sends, cut
wherever the network cuts it, the messages that come out of the splitter and wsproto together
are the messages sent, in order; anything but a simple frame reaches wsproto whole, from a
frame boundary, so its verdicts (close codes) are the ones wsproto gives alone."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Message, Ping, TextMessage

from trio_echo.server.websocket import MessageLimit
from trio_echo.server.ws_frames import ForWsproto, FrameSplitter, Whole, server_frame

EXAMPLES = 400 if os.environ.get("CI") == "true" else 100
LIMIT = 1 << 16


def client_bytes(items: list[tuple[str, object, bool]]) -> bytes:
    """What a client sends: each item a text or binary piece (message_finished or not), or a
    ping; masked by wsproto's own client."""
    client = Connection(ConnectionType.CLIENT)
    out = b""
    for kind, data, finished in items:
        if kind == "text":
            assert isinstance(data, str)
            out += client.send(TextMessage(data=data, message_finished=finished))
        elif kind == "binary":
            assert isinstance(data, bytes)
            out += client.send(BytesMessage(data=data, message_finished=finished))
        else:
            assert isinstance(data, bytes)
            out += client.send(Ping(payload=data))
    return out


def server_side(stream: bytes, cuts: list[int]) -> tuple[list[tuple[bool, bytes]], list[object]]:
    """The stream read in pieces, through the splitter and wsproto, as MessageChannel does:
    the messages (text?, bytes) and wsproto's other events."""
    splitter = FrameSplitter(LIMIT)
    server = Connection(ConnectionType.SERVER, extensions=[MessageLimit(LIMIT)])
    messages: list[tuple[bool, bytes]] = []
    others: list[object] = []
    parts: list[bytes] = []
    last = 0
    for cut in [*sorted(cuts), len(stream)]:
        for item in splitter.feed(stream[last:cut]):
            if isinstance(item, Whole):
                messages.append((item.text, item.payload))
                continue
            assert isinstance(item, ForWsproto)
            server.receive_data(item.data)
            for event in server.events():
                if isinstance(event, Message):
                    data = event.data
                    parts.append(data.encode() if isinstance(data, str) else bytes(data))
                    if event.message_finished:
                        messages.append((isinstance(event, TextMessage), b"".join(parts)))
                        parts = []
                else:
                    others.append(event)
        last = cut
    return messages, others


@settings(max_examples=EXAMPLES, deadline=None)
@given(data=st.data())
def test_messages_come_out_as_sent_however_the_bytes_are_cut(data: st.DataObject) -> None:
    shapes = data.draw(st.lists(st.tuples(st.booleans(), st.integers(1, 3)), max_size=8))
    items: list[tuple[str, object, bool]] = []
    expected: list[tuple[bool, bytes]] = []
    pings: list[bytes] = []
    for is_text, count in shapes:  # a message, in `count` frames, pings between them
        pieces: list[str | bytes] = [
            data.draw(st.text(max_size=300)) if is_text else data.draw(st.binary(max_size=3000))
            for _ in range(count)
        ]
        for n, piece in enumerate(pieces):
            if data.draw(st.booleans()):
                pings.append(data.draw(st.binary(max_size=125)))
                items.append(("ping", pings[-1], True))
            items.append(("text" if is_text else "binary", piece, n == count - 1))
        whole = [p.encode() if isinstance(p, str) else p for p in pieces]
        expected.append((is_text, b"".join(whole)))
    stream = client_bytes(items)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=8))
    messages, others = server_side(stream, cuts)
    assert messages == expected
    assert [e.payload for e in others if isinstance(e, Ping)] == pings
    assert [e for e in others if not isinstance(e, Ping)] == []


def masked(first: int, payload: bytes) -> bytes:
    size = len(payload)
    if size < 126:
        head = bytes((first, 0x80 | size))
    elif size < 1 << 16:
        head = bytes((first, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((first, 0x80 | 127)) + size.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


def verdict(stream: bytes) -> int | None:
    """The close code the server side gives, or None."""
    _messages, others = server_side(stream, [])
    codes = [int(e.code) for e in others if isinstance(e, CloseConnection)]
    return codes[0] if codes else None


def test_what_only_wsproto_judges_gets_wsprotos_verdict() -> None:
    assert verdict(masked(0x81, b"caf\xc3\x28")) == 1007  # invalid UTF-8
    assert verdict(masked(0x81, b"ok") + bytes((0x81, 2)) + b"no") == 1002  # unmasked
    assert verdict(masked(0x83, b"")) == 1002  # a reserved opcode
    assert verdict(masked(0x82, b"x" * (LIMIT + 1))) == 1009
    head = bytes((0x82, 0xFF)) + (64 << 20).to_bytes(8, "big") + b"\0\0\0\0"
    assert verdict(head + b"x" * 1000) == 1009  # refused at the header
    assert verdict(masked(0x01, b"a") + masked(0x81, b"b")) == 1002  # a new message mid-way
    assert verdict(masked(0x81, b"fine")) is None


def test_the_echo_frame_is_what_wsproto_would_send() -> None:
    server = Connection(ConnectionType.SERVER)
    for text, payload in [(True, b"hi"), (False, b"\0" * 200), (False, b"y" * 70000)]:
        event = TextMessage(payload.decode()) if text else BytesMessage(payload)
        assert server_frame(text, payload) == server.send(event)
