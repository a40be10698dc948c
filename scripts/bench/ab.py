"""An A/B of two versions of trio-echo, from the results.json of runs of each (`run.py --out`),
alternated by whoever ran them: the median msg/s of each workload on each side, and after /
before. The trio tutorial's figures in the same runs show how much the machine itself moved.

    python scripts/bench/ab.py --before old1 old2 --after new1 new2
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROWS = (
    ("1 KiB, 10 conns", "trio-echo", "ping", 10),
    ("1 KiB, 100 conns", "trio-echo", "ping", 100),
    ("1 KiB, 1000 conns", "trio-echo", "ping", 1000),
    ("1 KiB, 10 conns, portable path", "trio-echo-portable", "ping", 10),
    ("1 KiB, 100 conns, portable path", "trio-echo-portable", "ping", 100),
    ("TLS 1 KiB ping, 10 conns", "trio-echo-tls", "tls", 10),
    ("TLS 1 KiB ping, 100 conns", "trio-echo-tls", "tls", 100),
    ("TLS ping, 10 conns, portable path", "trio-echo-portable-tls", "tls", 10),
    ("TLS ping, 100 conns, portable path", "trio-echo-portable-tls", "tls", 100),
    ("(the trio tutorial, 1 KiB, 10 conns)", "trio-tutorial", "ping", 10),
    ("(the trio tutorial over TLS, 10 conns)", "trio-tutorial-tls", "tls", 10),
)


def runs(directories: Sequence[Path]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for directory in directories:
        results = json.loads((directory / "results.json").read_text())
        found += [{**run, "kind": "ping"} for run in results["runs"] if run.get("size") == 1024]
        found += [
            {**run, "kind": "tls"} for run in results["tls_runs"] if run["workload"] == "ping"
        ]
    return found


def median(found: list[dict[str, Any]], server: str, kind: str, conns: int) -> float | None:
    values = [
        run["msg_per_s"]
        for run in found
        if (run["server"], run["kind"], run["conns"]) == (server, kind, conns)
        and "msg_per_s" in run
    ]
    return statistics.median(values) if values else None


def table(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> str:
    lines = [
        "| workload | before (median) | after (median) | after / before |",
        "|---|---:|---:|---:|",
    ]
    for label, server, kind, conns in ROWS:
        old, new = median(before, server, kind, conns), median(after, server, kind, conns)
        if old is None or new is None:
            continue
        lines.append(f"| {label} | {old:,.0f} | {new:,.0f} | {new / old:.2f}x |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--before", nargs="+", type=Path, required=True)
    parser.add_argument("--after", nargs="+", type=Path, required=True)
    args = parser.parse_args(argv)
    print(table(runs(args.before), runs(args.after)))


if __name__ == "__main__":
    main()
