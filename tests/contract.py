"""The event log's JSON contract, checked: every record against its event's part of the
schema (`trio_echo/events.schema.json`)."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import jsonschema

from trio_echo import schema
from trio_echo.events import Event
from trio_echo.rendering import render_json


@cache
def _validator(name: str) -> jsonschema.Draft202012Validator | None:
    document = json.loads(schema.SCHEMA_FILE.read_text(encoding="utf-8"))
    if name not in document["$defs"] or name == "words":
        return None
    return jsonschema.Draft202012Validator({"$defs": document["$defs"], "$ref": f"#/$defs/{name}"})


def problems(record: Any) -> list[str]:
    """What is wrong with one JSON record of the log, by the schema; [] if nothing."""
    if not isinstance(record, dict) or not isinstance(record.get("event"), str):
        return ["not an object with an `event` name"]
    validator = _validator(record["event"])
    if validator is None:
        return [f"no event is named {record['event']!r}"]
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(record)
    ]


def check_record(record: Any) -> None:
    found = problems(record)
    assert not found, f"{record} breaks the events schema: {'; '.join(found)}"


def check_event(event: Event) -> None:
    """An event object as its JSON line would carry it."""
    check_record(json.loads(render_json(event, 0.0)))
