"""The event log's JSON contract: a JSON Schema (draft 2020-12) made from the event classes.

Every JSON line is one object: `time` (Unix seconds), `event` (the unique name), `worker`
(with --workers), the event's own fields, and `message`, the one value in the reader's
language. The schema is generated from `events` (the field types) and the descriptions
below; `trio_echo/events.schema.json` is that output, shipped in the package, and a test
holds the two equal and validates every event the test suite sees against it.

Versions: MAJOR changes when a name, a field or a meaning changes or goes (consumers must
look), MINOR when an event or a field is added (old consumers keep working).

``python -m trio_echo.schema`` prints the schema; ``--markdown`` prints the reference page
(docs/events.md).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

from trio_echo import events
from trio_echo.events import Event, Words

VERSION: Final = "2.1.0"  # 1.x: the names before issue 21 (`connected`, `listening`...)
SCHEMA_FILE: Final = Path(__file__).with_name("events.schema.json")

# What each field means, by name: a name means the same in every event that has it.
FIELDS: Final[dict[str, str]] = {
    "activated": "true when the socket was handed over by systemd (socket activation), not "
    "bound from host and port",
    "active": "clients connected at that moment",
    "attempt": "1 for the first sending of this datagram, 2 and more for the retries",
    "bytes": "bytes in this read, write or datagram",
    "bytes_in": "bytes received from the peer",
    "bytes_out": "bytes sent to the peer",
    "chunk_size": "the most bytes one read takes (--chunk-size)",
    "cipher": "the TLS cipher suite, as OpenSSL names it",
    "client_cert": "the subject of the client's certificate (mutual TLS), or null",
    "conn": "the connection's number in this server process, from 1",
    "connections": "clients served in all",
    "cores": "the cores this process may run on (its CPU affinity)",
    "count": "datagrams not answered since the last such event",
    "datagrams_in": "UDP datagrams received",
    "datagrams_out": "UDP datagrams answered",
    "detail": "why, for programs and people: an object with a stable `code` and the values "
    "the explanation names (null when the reason says it all)",
    "drain": "seconds of draining before the stop (0: none)",
    "duplicated": "echoes that came back more than once",
    "duration": "seconds from the connection's start to its end",
    "echoed": "datagrams whose echo came back",
    "end_of_input": "the keys that end a terminal's input on this system (`Ctrl-D`, on Windows "
    "`Ctrl-Z, Enter`)",
    "error": "the errno's name: EMFILE, ENFILE, ENOMEM or ENOBUFS",
    "events": "events left out",
    "exit_command": "whether the line `exit` ends a session (--no-exit-command: false)",
    "failures": "accept attempts that failed during the pause",
    "fd_limit": "the descriptors this process may open (RLIMIT_NOFILE), or null where "
    "sockets have no such limit (Windows)",
    "fingerprint": "the server certificate's SHA-256 fingerprint, `sha256:` and 64 hex digits",
    "health_check": "true for a PROXY v2 LOCAL header: the load balancer's own health check",
    "host": "the address as given or bound",
    "idle_timeout": "seconds of silence after which a client is closed, or null (never)",
    "issuer": "the server certificate's issuer",
    "late": "true when the echo came after the client had given up waiting for it",
    "limit": "the --max-connections limit",
    "local": "the client's own address, host:port",
    "lost": "datagrams whose echo never came back",
    "max_connections": "clients served at once, at most (--max-connections)",
    "not_after": "the end of the server certificate's validity",
    "number": "the datagram's number in this session, from 1",
    "paused": "seconds accepting was paused",
    "peer": "the other end's address: host:port (IPv6 in brackets), `unix:PATH`, `memory`; "
    "null when the connection was gone before its address could be read",
    "pid": "the server's process id",
    "port": "the TCP or UDP port",
    "preview": "the first 32 bytes, escaped: printable text as it is, everything else as "
    "backslash escapes (client bytes never reach a log raw)",
    "reach": "`loopback` (this machine only), `any` (every address of this machine) or "
    "`address` (the one address given)",
    "reason": "why, as a code (the values are listed with each event)",
    "reasons": "datagrams not answered, by reason: `loop_guard`, `repeat_guard`, `rate_limit`, "
    "`broadcast`, `truncated`",
    "reordered": "echoes that came back out of order",
    "room": "the clients the descriptor limit has room for",
    "rtt": "seconds from sending the datagram to its echo",
    "rtt_avg": "the mean round trip in seconds, or null if nothing came back",
    "rtt_max": "the longest round trip in seconds, or null",
    "rtt_min": "the shortest round trip in seconds, or null",
    "sent": "datagrams sent (not counting retries)",
    "shutdown_timeout": "seconds a stop gives the echoes in flight (--shutdown-timeout)",
    "sni": "the server name the client asked for (SNI), or null",
    "stop_signals": "the signals that stop this server here: SIGINT, SIGTERM or SIGBREAK",
    "subject": "the server certificate's subject (empty if it has none)",
    "system": "the operating system: `linux`, `darwin` or `windows`",
    "timeout": "seconds the echoes in flight get (--shutdown-timeout)",
    "tls": "where the certificate comes from (a file, or `ephemeral self-signed`), or null "
    "without TLS",
    "tls_fingerprint": "the certificate's SHA-256 fingerprint when the port speaks TLS, or null",
    "top_sources": "the sources most dropped, as `address (count)`",
    "transport": "`tcp`, `udp`, `http` (the port of --http: the page and the WebSocket "
    "echo), `metrics` (the operator's port, --metrics), or for the client `websocket`",
    "server_name": "which server this is (--name; default: the host name), as /info and the "
    "metrics say it too",
    "method": "the HTTP request's method, escaped as a preview is; null: no valid request came",
    "target": "the HTTP request's target (path and query), escaped; null: no valid request",
    "status": "the HTTP status answered: 101 for a WebSocket, 200 for the page's files",
    "compression": "true when permessage-deflate was agreed (its inflated size bounded)",
    "trust": "how the certificate was trusted: `ca`, `fingerprint` (pinned) or `insecure`",
    "udp_bytes_in": "UDP bytes received",
    "udp_bytes_out": "UDP bytes answered",
    "uptime": "seconds the server ran",
    "version": "the program's version (server.starting), or the TLS version",
    "workers": "the worker processes asked for (--workers)",
    "via": "the load balancer's address when a PROXY header named the client, or null",
}
ENVELOPE: Final[dict[str, tuple[dict[str, object], str]]] = {
    "time": ({"type": "number"}, "when, in Unix seconds (to the microsecond)"),
    "event": ({"type": "string"}, "the event's unique name"),
    "worker": ({"type": "integer"}, "the worker process's number, with --workers"),
    "message": ({"type": "string"}, "what happened, in a sentence, in the chosen language"),
}
_WORDS_REF: Final = {"$ref": "#/$defs/words"}


def event_classes() -> list[type[Event]]:
    """Every event class, in the order `events` defines them."""
    return [
        cls
        for cls in vars(events).values()
        if isinstance(cls, type) and issubclass(cls, Event) and cls is not Event
    ]


def json_type(hint: object) -> dict[str, object]:
    """The JSON Schema of a Python type hint of an event field."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Words:
        return dict(_WORDS_REF)
    simple = {str: "string", int: "integer", float: "number", bool: "boolean"}
    if hint in simple:
        return {"type": simple[hint]}
    if hint is type(None):
        return {"type": "null"}
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [json_type(arg) for arg in args]}
    if origin in (tuple, list):
        return {"type": "array", "items": json_type(args[0])}
    if origin is dict:
        return {"type": "object", "additionalProperties": json_type(args[1])}
    raise TypeError(f"no JSON type for {hint!r}")


def _event_schema(cls: type[Event]) -> dict[str, object]:
    hints = typing.get_type_hints(cls, vars(events))
    properties: dict[str, object] = {}
    for key, (kind, description) in ENVELOPE.items():
        properties[key] = {**kind, "description": description}
    properties["event"] = {"const": cls.name, "description": ENVELOPE["event"][1]}
    for field in dataclasses.fields(cls):
        properties[field.name] = {**json_type(hints[field.name]), "description": FIELDS[field.name]}
    required = ["time", "event", *(field.name for field in dataclasses.fields(cls)), "message"]
    description = (cls.__doc__ or "").strip()
    if cls.data:
        description += " Left out with --quiet, and first when a log falls behind."
    return {
        "type": "object",
        "description": " ".join(description.split()),
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def schema() -> dict[str, object]:
    """The whole contract, as a JSON Schema document."""
    classes = event_classes()
    words = {
        "type": "object",
        "description": "an explanation: `code` is stable, for programs; the other keys are the "
        "values the sentence names (numbers, addresses, escaped previews, or more of these)",
        "properties": {
            "code": {
                "type": "string",
                "description": "what it is, in a word that never changes with the language",
            }
        },
        "required": ["code"],
        "additionalProperties": {
            "anyOf": [{"type": ["string", "number", "boolean", "null"]}, _WORDS_REF]
        },
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:trio-echo:events:{VERSION}",
        "title": "trio-echo event log (--log-format json), one object per line",
        "version": VERSION,
        "oneOf": [{"$ref": f"#/$defs/{cls.name}"} for cls in classes],
        "$defs": {"words": words, **{cls.name: _event_schema(cls) for cls in classes}},
    }


def dumps() -> str:
    return json.dumps(schema(), indent=2, ensure_ascii=False) + "\n"


def markdown() -> str:
    """The reference page of the events, from the schema."""
    document = schema()
    definitions = typing.cast(dict[str, dict[str, object]], document["$defs"])
    lines = [
        "# Events: the JSON contract",
        "",
        "<!-- generated by `python -m trio_echo.schema --markdown`; a test checks it -->",
        "",
        f"Schema version **{VERSION}** (`trio_echo/events.schema.json`, shipped in the "
        "package; JSON Schema draft 2020-12). Each line of `--log-format json` is one "
        "object with `time`, `event`, the fields below, and `message` (the only value that "
        "changes with `--lang`); `worker` is added with `--workers`.",
        "",
    ]
    for name, definition in definitions.items():
        if name == "words":
            continue
        lines += [f"## `{name}`", "", str(definition["description"]), ""]
        lines += ["| field | type | meaning |", "|---|---|---|"]
        properties = typing.cast(dict[str, dict[str, object]], definition["properties"])
        for field, spec in properties.items():
            if field in ENVELOPE:
                continue
            lines.append(f"| `{field}` | {_type_text(spec)} | {spec['description']} |")
        lines.append("")
    return "\n".join(lines)


def _type_text(spec: dict[str, object]) -> str:
    if "enum" in spec:
        return " \\| ".join(f"`{value}`" for value in typing.cast(list[object], spec["enum"]))
    if "anyOf" in spec:
        return " or ".join(_type_text(part) for part in _parts(spec["anyOf"]))
    if "$ref" in spec:
        return "detail object"
    if spec.get("type") == "array":
        return f"array of {_type_text(typing.cast(dict[str, object], spec['items']))}"
    if spec.get("type") == "object":
        return "object"
    return str(spec["type"])


def _parts(value: object) -> Iterator[dict[str, object]]:
    yield from typing.cast(list[dict[str, object]], value)


def main(argv: Sequence[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    sys.stdout.write(markdown() + "\n" if "--markdown" in argv else dumps())


if __name__ == "__main__":
    main()
