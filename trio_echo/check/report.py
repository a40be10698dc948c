"""A check's report, said: a table for people (in the chosen language), JSON for programs
(the probes' names and results in English, as machines read them)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from typing import Final

from trio_echo.check.probes import Report
from trio_echo.events import format_address
from trio_echo.i18n import N_, _, ngettext

# The probes' names, for people; JSON keeps the names above, which machines read.
_TITLES: Final = {
    "resolve": N_("resolve"),
    "connect": N_("connect"),
    "tls": N_("tls"),
    "short line": N_("short line"),
    "1 MiB binary": N_("1 MiB binary"),
    "UTF-8 text": N_("UTF-8 text"),
    "exit": N_("exit"),
    "udp round trip": N_("udp round trip"),
    "path MTU": N_("path MTU"),
}
_NUMBERED: Final = (
    (re.compile(r"line of (\d+) bytes"), N_("line of {n} bytes")),
    (re.compile(r"latency \((\d+) pings\)"), N_("latency ({n} pings)")),
    (re.compile(r"datagram of (\d+) bytes"), N_("datagram of {n} bytes")),
    (re.compile(r"loss and rtt \((\d+) datagrams\)"), N_("loss and rtt ({n} datagrams)")),
)
# The results, for people (the JSON keeps the English words).
RESULTS: Final = {"PASS": N_("PASS"), "FAIL": N_("FAIL"), "WARN": N_("WARN"), "SKIP": N_("SKIP")}


def title(name: str) -> str:
    """A probe's name in the chosen language."""
    if name in _TITLES:
        return _(_TITLES[name])
    for pattern, text in _NUMBERED:
        if found := pattern.fullmatch(name):
            return _(text).format(n=found.group(1))
    return name


def render_table(report: Report) -> str:
    target = format_address(report.host, report.port)
    titles = [title(p.name) for p in report.probes]
    head = (_("PROBE"), _("RESULT"), _("DETAIL"))
    width = max(len(t) for t in [*titles, head[0]])
    status_width = max(len(_(s)) for s in [*RESULTS.values(), head[1]])
    lines = [
        _("trio-echo check of {where}").format(where=target),
        f"{head[0]:<{width}}  {head[1]:<{status_width}}  {head[2]}",
    ]
    for p, name in zip(report.probes, titles, strict=True):
        detail = p.figure if p.status == "PASS" else p.diagnosis or p.figure
        note = "" if p.required else _(" (optional)")
        status = _(RESULTS[p.status])
        lines.append(f"{name:<{width}}  {status:<{status_width}}  {detail}{note}")
    failed = [name for p, name in zip(report.probes, titles, strict=True) if p.status == "FAIL"]
    skipped = sum(p.status == "SKIP" and p.required for p in report.probes)
    if report.ok:
        lines.append(_("result: every required probe passed"))
    else:
        lines.append(
            ngettext(
                "result: FAILED: {failed} ({n} required probe not run)",
                "result: FAILED: {failed} ({n} required probes not run)",
                skipped,
            ).format(failed=", ".join(failed), n=skipped)
        )
    return "\n".join(lines)


def render_json(report: Report) -> str:
    return json.dumps(
        {
            "host": report.host,
            "port": report.port,
            "ok": report.ok,
            "probes": [asdict(p) for p in report.probes],
        }
    )
