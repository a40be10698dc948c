"""One vocabulary, two renderings; client bytes never reach a log raw."""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from datetime import datetime
from pathlib import Path

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from tests.contract import problems
from trio_echo import events, schema
from trio_echo.eventlog import COPY_VARIABLE, open_event_log
from trio_echo.events import Event, preview, says
from trio_echo.i18n import N_
from trio_echo.rendering import LABELS, explain, json_value, render_json, render_text

SERVER_EVENTS = {
    "server.starting",
    "server.listening",
    "server.connected",
    "server.received",
    "server.sent",
    "server.disconnected",
    "server.stopping",
    "server.stopped",
    "server.rejected",
    "server.accept_paused",
    "server.accept_resumed",
    "server.tls_established",
    "server.datagram",
    "server.udp_dropped",
    "server.limit_warning",
    "server.workers_warning",
    "server.http_request",
    "server.websocket_opened",
}
CLIENT_EVENTS = {
    "client.connecting",
    "client.connected",
    "client.tls_established",
    "client.sent",
    "client.received",
    "client.disconnected",
    "client.datagram_sent",
    "client.datagram_received",
    "client.udp_done",
}
LOG_EVENTS = {"log.dropped"}
ALL = [cls for cls in vars(events).values() if isinstance(cls, type) and issubclass(cls, Event)]
ALL.remove(Event)


def sample(cls: type[Event], data: bytes = b"hello\n") -> Event:
    """An instance with plausible values for each field, by its type."""
    values: dict[str, object] = {}
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        kind = hints[field.name]
        if field.name == "preview":
            values[field.name] = preview(data)
        elif field.name == "detail":
            values[field.name] = says(
                "timeout", N_("no PROXY header within {seconds:g} s (--proxy-timeout)"), seconds=5.0
            )
        elif field.name == "error":
            values[field.name] = "EMFILE"
        elif field.name in ("reason", "trust", "transport", "reach") and (
            typing.get_origin(kind) is typing.Literal
        ):
            values[field.name] = typing.get_args(kind)[0]
        elif kind is int:
            values[field.name] = 3
        elif kind is float:
            values[field.name] = 1.5
        elif kind is bool:
            values[field.name] = True
        elif field.name == "stop_signals":
            values[field.name] = ("SIGINT", "SIGTERM")
        elif field.name == "fd_limit":
            values[field.name] = 4096
        elif field.name in ("idle_timeout", "sni", "tls", "tls_fingerprint") or (
            field.name.startswith("rtt_")
        ):
            values[field.name] = None
        elif field.name == "reasons":
            values[field.name] = {"rate_limit": 3}
        elif field.name == "top_sources":
            values[field.name] = ["127.0.0.1 (3)"]
        else:
            values[field.name] = "SIGTERM" if field.name == "reason" else "127.0.0.1:7007"
    return cls(**values)


def test_the_vocabulary_is_the_documented_one_and_every_name_is_unique() -> None:
    names = [cls.name for cls in ALL]
    assert len(set(names)) == len(names)
    assert set(names) == SERVER_EVENTS | CLIENT_EVENTS | LOG_EVENTS


@pytest.mark.parametrize("cls", ALL, ids=lambda cls: cls.__name__)
def test_every_event_renders_as_one_text_line_and_one_json_object(cls: type[Event]) -> None:
    event = sample(cls)
    text = render_text(event, 0.0)
    assert "\n" not in text
    assert LABELS[cls] in text
    record = json.loads(render_json(event, 0.0))
    assert record["event"] == cls.name
    assert record["message"] == explain(event)
    for field in dataclasses.fields(cls):
        assert record[field.name] == json.loads(json.dumps(json_value(getattr(event, field.name))))


@given(st.integers(min_value=0, max_value=4_000_000_000_000))
def test_text_time_is_the_local_time_to_the_millisecond(millis: int) -> None:
    when = millis / 1000 + 0.0004  # inside the millisecond, clear of float rounding
    stamp = render_text(events.Stopped(connections=0, bytes_in=0, bytes_out=0, uptime=0), when)
    assert stamp.split()[0] == datetime.fromtimestamp(when).strftime("%H:%M:%S.%f")[:-3]


@pytest.mark.parametrize(
    ("data", "shown"),
    [
        (b"plain text", "plain text"),
        (b"\x1b[2J\x1b[31mred", "\\x1b[2J\\x1b[31mred"),
        (b"line\r\nfake 12:00:00 STOPPED", "line\\r\\nfake 12:00:00 STOPPED"),
        (b"\xff\xfe bad utf-8", "\\xff\\xfe bad utf-8"),
        ("caf\u00e9 \u202e".encode(), "caf\u00e9 \\u202e"),
        (b'back\\slash "quote"', 'back\\\\slash \\"quote\\"'),
        (b"\x00\x07", "\\x00\\x07"),
    ],
)
def test_preview_escapes(data: bytes, shown: str) -> None:
    assert preview(data) == shown


@given(st.binary(max_size=100))
def test_no_client_bytes_can_break_a_log_line(data: bytes) -> None:
    event = events.Received(conn=1, bytes=len(data), preview=preview(data))
    text = render_text(event, 0.0)
    assert text.isprintable()  # no control characters, escapes or line breaks
    json_line = render_json(event, 0.0)
    assert json_line.isascii()
    assert json_line.isprintable()
    assert json.loads(json_line)["preview"] == preview(data)


def unescape(shown: str) -> bytes:
    """Undo `preview`: \\xNN is a raw byte, \\u and \\U a character, the rest text."""
    out = bytearray()
    simple = {"n": b"\n", "r": b"\r", "t": b"\t", "\\": b"\\", '"': b'"'}
    i = 0
    while i < len(shown):
        char = shown[i]
        if char != "\\":
            out += char.encode()
            i += 1
        elif shown[i + 1] in simple:
            out += simple[shown[i + 1]]
            i += 2
        else:
            width = {"x": 2, "u": 4, "U": 8}[shown[i + 1]]
            code = int(shown[i + 2 : i + 2 + width], 16)
            out += bytes([code]) if width == 2 else chr(code).encode()
            i += 2 + width
    return bytes(out)


@given(st.binary(max_size=100) | st.text(max_size=30).map(str.encode))
def test_a_preview_loses_nothing_it_shows(data: bytes) -> None:
    """Escaping is unambiguous: the bytes can be read back exactly from a preview."""
    assert unescape(preview(data, limit=len(data))) == data


@given(st.text(alphabet=st.characters(categories=["L", "N"], include_characters=" "), min_size=1))
def test_a_preview_cut_at_its_limit_never_splits_a_character(text: str) -> None:
    """Cyrillic takes two bytes a letter; a cut through one must not show as `\\xd0`."""
    shown = preview(text.encode())
    assert "\\x" not in shown
    assert text.startswith(shown)
    assert (
        len(text.encode()) <= events.PREVIEW_BYTES or len(shown.encode()) > events.PREVIEW_BYTES - 4
    )


def test_the_contract_check_refuses_what_breaks_the_schema() -> None:
    good = json.loads(render_json(sample(events.Disconnected), 1.0))
    assert problems(good) == []
    assert problems({**good, "event": "disconnected"})  # a name from before 2.0
    assert problems({**good, "reason": "gone"})  # not one of its codes
    assert problems({**good, "bytes_in": "3"})  # a number as text
    assert problems({k: v for k, v in good.items() if k != "duration"})  # a field missing
    assert problems({**good, "extra": 1})  # a field the contract does not have
    assert problems({**good, "detail": {"why": "no code"}})


def test_the_shipped_schema_is_the_code_s() -> None:
    assert schema.SCHEMA_FILE.read_text(encoding="utf-8") == schema.dumps()


def test_every_field_of_every_event_is_described() -> None:
    document = schema.schema()
    for name, definition in document["$defs"].items():  # type: ignore[attr-defined]
        for field, spec in definition.get("properties", {}).items():
            assert spec.get("description"), f"{name}.{field}"


def test_an_event_log_copies_every_event_as_json_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "copy.jsonl"
    monkeypatch.setenv(COPY_VARIABLE, str(copy))
    read_end, write_end = os.pipe()

    async def main() -> None:
        async with open_event_log("text", write_end) as log:
            log.emit(sample(events.Connected))
            log.emit(sample(events.Stopped))

    trio.run(main)
    os.close(write_end)
    os.close(read_end)
    records = [json.loads(line) for line in copy.read_text().splitlines()]
    assert [r["event"] for r in records] == ["server.connected", "server.stopped"]
    assert all(problems(record) == [] for record in records)
