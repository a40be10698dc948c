"""The report: the results' format (`Results`, written to results.json), the statistics
over rounds, the goals, the Markdown and the chart, all pure functions of the results.

    python scripts/bench/report.py results/results.json   # the report again, from a run
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import shutil
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servers import (
    HANDSHAKE_THREADS,
    HANDSHAKES,
    HERE,
    PORTABLE,
    RESULTS_END,
    RESULTS_START,
    TLS_UVLOOP,
    TUTORIAL,
    UDP_ASYNCIO,
    UDP_FLOWS,
    UVLOOP,
    WITH_METRICS,
    WS_ASYNCIO,
    WS_CONNS,
    WS_UVLOOP,
    KiB,
    read_size_for,
)


@dataclass
class Results:
    machine: dict[str, Any]
    command: str
    date: str
    options: dict[str, Any]
    servers: dict[str, str]
    left_out: dict[str, str]
    runs: list[dict[str, Any]] = field(default_factory=list)
    medians: list[dict[str, Any]] = field(default_factory=list)
    idle: list[dict[str, Any]] = field(default_factory=list)
    client: dict[str, Any] = field(default_factory=dict)
    workers: list[dict[str, Any]] = field(default_factory=list)
    tls_servers: dict[str, str] = field(default_factory=dict)
    udp_servers: dict[str, str] = field(default_factory=dict)
    udp_runs: list[dict[str, Any]] = field(default_factory=list)
    tls_runs: list[dict[str, Any]] = field(default_factory=list)
    tls_idle: list[dict[str, Any]] = field(default_factory=list)
    ws_servers: dict[str, str] = field(default_factory=dict)
    ws_runs: list[dict[str, Any]] = field(default_factory=list)
    ws_idle: list[dict[str, Any]] = field(default_factory=list)
    goals: list[dict[str, Any]] = field(default_factory=list)


METRICS = ("msg_per_s", "mib_per_s", "p50_us", "p99_us", "load_cpu")


def medians(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["server"], run["size"], run["conns"]), []).append(run)
    out = []
    for (server, size, conns), group in groups.items():
        good = [run for run in group if "error" not in run]
        row: dict[str, Any] = {"server": server, "size": size, "conns": conns,
                               "rounds": len(group), "failed": len(group) - len(good)}  # fmt: skip
        for metric in METRICS:
            row[metric] = statistics.median(run[metric] for run in good) if good else None
        out.append(row)
    for row in out:  # ratios against the two baselines measured in the same rounds
        for base, key in ((TUTORIAL, "x_tutorial"), (UVLOOP, "x_uvloop")):
            row[key] = round_ratio(runs, row["server"], base, row["size"], row["conns"])
    return out


def round_ratio(
    runs: list[dict[str, Any]], server: str, base: str, size: int, conns: int,
    metric: str = "msg_per_s",
) -> float | None:  # fmt: skip
    """The median over rounds of server / base, each ratio taken within one round."""
    by_round: dict[int, dict[str, float]] = {}
    for run in runs:
        if (run["size"], run["conns"]) == (size, conns) and "error" not in run:
            by_round.setdefault(run["round"], {})[run["server"]] = run[metric]
    ratios = [figures[server] / figures[base] for figures in by_round.values()
              if figures.get(server) and figures.get(base)]  # fmt: skip
    return statistics.median(ratios) if ratios else None


def udp_markdown(results: Results) -> list[str]:
    lines = ["", "### UDP: 1 KiB datagram ping-pong, datagrams/s (x asyncio DatagramProtocol / "
             "x uvloop / x C)", "",
             "Each flow from its own loopback address keeps one datagram in flight (`udp_load.c`"
             ", C, every byte checked; a datagram not back in 200 ms is sent again and counted "
             "lost).", "",
             "| server | " + " | ".join(f"{f} flow{'s' * (f > 1)}" for f in UDP_FLOWS)
             + " | lost |", "|---|" + "---:|" * (len(UDP_FLOWS) + 1)]  # fmt: skip
    for name in results.udp_servers:
        cells = []
        for flows in UDP_FLOWS:
            value = workload_median(results.udp_runs, name, "udp", flows, "msg_per_s")
            ratios = [workload_ratio(results.udp_runs, name, base, "udp", flows, "msg_per_s")
                      for base in (UDP_ASYNCIO, "uvloop-datagram", "c-udp")]  # fmt: skip
            cells.append("failed" if value is None else
                         f"{value:,.0f} ({' / '.join(_x(r) for r in ratios)})")  # fmt: skip
        lost = sum(run.get("lost", 0) for run in results.udp_runs if run["server"] == name)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {lost} |")
    return lines


def workload_median(
    runs: list[dict[str, Any]], server: str, workload: str, conns: int, metric: str
) -> float | None:
    key = (server, workload, conns)
    values = [
        run[metric]
        for run in runs
        if "error" not in run and (run["server"], run["workload"], run["conns"]) == key
    ]
    return statistics.median(values) if values else None


def workload_ratio(
    runs: list[dict[str, Any]], server: str, base: str, workload: str, conns: int, metric: str
) -> float | None:
    """The median over rounds of server / base, each ratio taken within one round."""
    by_round: dict[int, dict[str, float]] = {}
    for run in runs:
        if (run["workload"], run["conns"]) == (workload, conns) and "error" not in run:
            by_round.setdefault(run["round"], {})[run["server"]] = run[metric]
    ratios = [figures[server] / figures[base] for figures in by_round.values()
              if figures.get(server) and figures.get(base)]  # fmt: skip
    return statistics.median(ratios) if ratios else None


def tls_markdown(results: Results) -> list[str]:
    conns = results.options["tls_conns"]
    lines = ["", "### TLS: 1 KiB ping-pong, msg/s, and full handshakes per second "
             "(x uvloop streams with ssl)", "",
             "Each handshake cycle: connect, a full TLS 1.3 handshake (no resumption), one "
             f"6-byte echo, close_notify, close; {HANDSHAKE_THREADS} cycles at once. Load: "
             "`tls_load.c` (C, OpenSSL), which checks every byte.", "",
             "| server | " + " | ".join(f"{c:,} conns" for c in conns)
             + " | handshakes/s | p50 us (10 conns) |",
             "|---|" + "---:|" * (len(conns) + 2)]  # fmt: skip
    for name in results.tls_servers:
        cells = []
        for c in conns:
            value = workload_median(results.tls_runs, name, "ping", c, "msg_per_s")
            ratio = workload_ratio(results.tls_runs, name, TLS_UVLOOP, "ping", c, "msg_per_s")
            cells.append("failed" if value is None else f"{value:,.0f} ({_x(ratio)})")
        hs = workload_median(results.tls_runs, name, *HANDSHAKES)
        hs_ratio = workload_ratio(results.tls_runs, name, TLS_UVLOOP, *HANDSHAKES)
        cells.append("failed" if hs is None else f"{hs:,.0f} ({_x(hs_ratio)})")
        p50 = workload_median(results.tls_runs, name, "ping", conns[0], "p50_us")
        cells.append(_cell(p50))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines + _idle_line("TLS", results.tls_idle)


def _idle_line(what: str, items: list[dict[str, Any]]) -> list[str]:
    if not items:
        return []
    return ["", f"RSS per idle {what} connection (KiB): " + ", ".join(
        f"{item['server']} {_cell(item.get('kib_per_conn'), 2)} at {item['conns']:,}"
        for item in items)]  # fmt: skip


def ws_markdown(results: Results) -> list[str]:
    lines = ["", "### WebSocket: 1 KiB ping-pong, msg/s (x websockets on asyncio / x on "
             "uvloop)", "",
             "One binary message each way per round trip, every byte checked. Load: `load.c "
             "wsping` (C: the upgrade, then masked frames).", "",
             "| server | " + " | ".join(f"{c:,} conns" for c in WS_CONNS)
             + " | p50 us (10 conns) |",
             "|---|" + "---:|" * (len(WS_CONNS) + 1)]  # fmt: skip
    for name in results.ws_servers:
        cells = []
        for c in WS_CONNS:
            value = workload_median(results.ws_runs, name, "ws", c, "msg_per_s")
            a = workload_ratio(results.ws_runs, name, WS_ASYNCIO, "ws", c, "msg_per_s")
            b = workload_ratio(results.ws_runs, name, WS_UVLOOP, "ws", c, "msg_per_s")
            cells.append("failed" if value is None else f"{value:,.0f} ({_x(a)} / {_x(b)})")
        cells.append(_cell(workload_median(results.ws_runs, name, "ws", WS_CONNS[0], "p50_us")))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines + _idle_line("WebSocket", results.ws_idle)


# ---- the report --------------------------------------------------------------------------------


def _row(results: Results, server: str, size: int, conns: int) -> dict[str, Any] | None:
    for row in results.medians:
        if (row["server"], row["size"], row["conns"]) == (server, size, conns):
            return row
    return None


def _ratio(results: Results, a: str, b: str, size: int, conns: int, metric: str) -> float | None:
    return round_ratio(results.runs, a, b, size, conns, metric)


def goals(results: Results) -> list[dict[str, Any]]:
    """The issue's goals, each with the figure from this run. A report, never a test."""
    out: list[dict[str, Any]] = []

    def goal(text: str, figure: float | None, target: float, at_most: bool = False) -> None:
        met = None if figure is None else (figure <= target if at_most else figure >= target)
        out.append({"goal": text, "figure": figure, "target": target,
                    "at_most": at_most, "met": met})  # fmt: skip

    for conns in (10, 100):
        goal(
            f"1 KiB, {conns} conns: trio-echo / uvloop streams >= 1.0",
            _ratio(results, "trio-echo", UVLOOP, KiB, conns, "msg_per_s"),
            1.0,
        )
        goal(
            f"1 KiB, {conns} conns: trio-echo / trio tutorial >= 2.0",
            _ratio(results, "trio-echo", TUTORIAL, KiB, conns, "msg_per_s"),
            2.0,
        )
        goal(
            f"1 KiB, {conns} conns: trio-echo portable path / trio tutorial >= 1.0",
            _ratio(results, PORTABLE, TUTORIAL, KiB, conns, "msg_per_s"),
            1.0,
        )
        goal(
            f"1 KiB, {conns} conns: every event logged / --quiet >= 0.5",
            _ratio(results, "trio-echo-logged", "trio-echo", KiB, conns, "msg_per_s"),
            0.5,
        )
        goal(
            f"1 KiB, {conns} conns: --metrics / without >= 0.95",
            _ratio(results, WITH_METRICS, "trio-echo", KiB, conns, "msg_per_s"),
            0.95,
        )
    for conns in (1, 10, 100):
        goal(
            f"100 KiB (64 KiB reads), {conns} conns: trio-echo / C MiB/s >= 0.8",
            _ratio(results, "trio-echo", "c-epoll", 100 * KiB, conns, "mib_per_s"),
            0.8,
        )
    goal(
        "1 KiB, 1 conn: p50 round trip trio-echo / C <= 1.5",
        _ratio(results, "trio-echo", "c-epoll", KiB, 1, "p50_us"),
        1.5,
        at_most=True,
    )
    for item in results.idle:
        if item["server"] == "trio-echo" and item["conns"] == 10000:
            goal("RSS per idle connection at 10,000 <= 8 KiB", item.get("kib_per_conn"), 8.0,
                 at_most=True)  # fmt: skip
    if "x_nc" in results.client:
        mib, longer = results.client["mib"], results.client["longer"]
        goal(f"client piping {mib} MiB: speed / nc -N >= 0.5", results.client["x_nc"], 0.5)
        goal(f"client piping {longer['mib']} MiB: speed / nc -N >= 0.7", longer["x_nc"], 0.7)
        goal("client start-up: import trio_echo.client / import trio <= 1.10",
             results.client.get("x_import_trio"), 1.10, at_most=True)  # fmt: skip
    if results.tls_runs:
        for conns in results.options["tls_conns"]:
            goal(f"TLS 1 KiB, {conns} conns: trio-echo / uvloop streams with ssl >= 1.0",
                 workload_ratio(results.tls_runs, "trio-echo-tls", TLS_UVLOOP, "ping", conns,
                                "msg_per_s"), 1.0)  # fmt: skip
        goal("TLS handshakes/s: trio-echo / uvloop streams with ssl >= 1.0",
             workload_ratio(results.tls_runs, "trio-echo-tls", TLS_UVLOOP, *HANDSHAKES),
             1.0)  # fmt: skip
    for conns in WS_CONNS if results.ws_runs else ():
        for other, target in ((WS_ASYNCIO, 1.2), (WS_UVLOOP, 1.0)):
            goal(f"WebSocket 1 KiB, {conns} conns: trio-echo / {other} >= {target}",
                 workload_ratio(results.ws_runs, "trio-echo-ws", other, "ws", conns,
                                "msg_per_s"), target)  # fmt: skip
    if results.udp_runs:
        for flows in UDP_FLOWS:
            goal(f"UDP 1 KiB, {flows} flow(s): trio-echo / asyncio DatagramProtocol >= 1.0",
                 workload_ratio(results.udp_runs, "trio-echo-udp", UDP_ASYNCIO, "udp", flows,
                                "msg_per_s"), 1.0)  # fmt: skip
    return out  # fmt: skip


def _cell(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def markdown(results: Results, chart: str | None) -> str:
    names = [server for server in results.servers]
    conns = results.options["conns"]
    lines = [
        f"Measured {results.date} with `{results.command}`.",
        "",
        f"Machine: {results.machine['cpu']}, {results.machine['cores']} cores, "
        f"Linux {results.machine['kernel']}, Python {results.machine['python']}, "
        f"trio {results.machine['trio']}, uvloop {results.machine['uvloop']}. "
        f"Servers on core {results.options['server_core']}, the C load generator on core "
        f"{results.options['load_core']}; {results.options['rounds']} rounds of "
        f"{results.options['seconds']} s (after {results.options['warmup']} s of warm-up), "
        "median reported. Every byte of every echo was checked.",
        "",
    ]
    if results.left_out:
        lines += ["Left out: " + "; ".join(f"{k} ({v})" for k, v in results.left_out.items()), ""]
    for size in results.options["sizes"]:
        metric, unit = ("mib_per_s", "MiB/s") if size >= 100 * KiB else ("msg_per_s", "msg/s")
        lines += [
            f"### {size // KiB} KiB messages, {read_size_for(size) // KiB} KiB reads: {unit} "
            "(x trio tutorial / x uvloop streams)",
            "",
            "| server | " + " | ".join(f"{c:,} conn{'s' * (c > 1)}" for c in conns) + " |",
            "|---|" + "---:|" * len(conns),
        ]
        for name in names:
            cells = []
            for c in conns:
                row = _row(results, name, size, c)
                if row is None or row[metric] is None:
                    cells.append("failed" if row else "-")
                    continue
                if row[metric] == 0:
                    cells.append("0 (stalled)")
                    continue
                digits = 1 if metric == "mib_per_s" else 0
                cells.append(f"{_cell(row[metric], digits)} ({_x(row['x_tutorial'])} / "
                             f"{_x(row['x_uvloop'])})")  # fmt: skip
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["### Round trip on one connection: p50 / p99 in microseconds (p50 x C)", "",
              "| server | " + " | ".join(f"{s // KiB} KiB" for s in results.options["sizes"])
              + " |", "|---|" + "---:|" * len(results.options["sizes"])]  # fmt: skip
    for name in names:
        cells = []
        for size in results.options["sizes"]:
            row = _row(results, name, size, 1)
            if row is None or row["p50_us"] is None:
                cells.append("-")
                continue
            ratio = _ratio(results, name, "c-epoll", size, 1, "p50_us")
            cells.append(f"{row['p50_us']:.0f} / {row['p99_us']:.0f} ({_x(ratio)})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "### The load generator is not the bottleneck", "",
              "Capacity is the rate the generator reached against the C server divided by "
              "the share of its core it used then; headroom is that over the fastest Python "
              "server's rate (goal: at least 1.5x). Where the generator used its whole core "
              "against C, the two C programs were equally busy: each does one recv and one "
              "send per message. The estimate holds where the generator does the same work "
              "for every server, as with 1 KiB messages. With larger ones, the C server's "
              "reads of 1 KiB (or 64 KiB) come back as many pieces for the generator to "
              "receive, and servers that read everything at once cost it less: there the "
              "row understates its capacity (it did drive them at the rate shown).", "",
              "| workload | C msg/s | load CPU | capacity | fastest Python server | its msg/s "
              "| load CPU | headroom |",
              "|---|---:|---:|---:|---|---:|---:|---:|"]  # fmt: skip
    for size in results.options["sizes"]:
        for c in conns:
            ceiling = _row(results, "c-epoll", size, c)
            pythons = [row for name in names if name not in ("c-epoll", "socat")
                       if (row := _row(results, name, size, c)) and row["msg_per_s"]]  # fmt: skip
            if not ceiling or not ceiling["msg_per_s"] or not pythons:
                continue
            best = max(pythons, key=lambda row: float(row["msg_per_s"]))
            capacity = ceiling["msg_per_s"] / max(ceiling["load_cpu"], 0.01)
            lines.append(f"| {size // KiB} KiB x {c:,} | {ceiling['msg_per_s']:,.0f} | "
                         f"{ceiling['load_cpu']:.0%} | {capacity:,.0f} | "
                         f"{best['server']} | {best['msg_per_s']:,.0f} | {best['load_cpu']:.0%} | "
                         f"{capacity / best['msg_per_s']:.2f}x |")  # fmt: skip
    if results.idle:
        lines += ["", "### RSS per idle connection (KiB)", "", "| server | "
                  + " | ".join(f"{c:,} conns" for c in results.options["idle_conns"]) + " |",
                  "|---|" + "---:|" * len(results.options["idle_conns"])]  # fmt: skip
        for name in dict.fromkeys(item["server"] for item in results.idle):
            cells = []
            for c in results.options["idle_conns"]:
                item = next((i for i in results.idle if (i["server"], i["conns"]) == (name, c)), {})
                cells.append(_cell(item.get("kib_per_conn"), 2) if item else "-")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if results.client:
        lines += ["", "### Client: lines piped through, against the C server", ""]
        if "error" in results.client:
            lines.append(f"Failed: {results.client['error']}")
        else:
            longer = results.client["longer"]
            lines += [f"| client | {results.client['mib']} MiB: seconds | MiB/s "
                      f"| {longer['mib']} MiB: seconds | MiB/s | CPU s: user + system |",
                      "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
            for name, took in results.client["seconds"].items():
                user, system = longer.get("cpu", {}).get(name, (0.0, 0.0))
                lines.append(f"| {name} | {took:.2f} | {results.client['mib_per_s'][name]:.1f} "
                             f"| {longer['seconds'][name]:.2f} "
                             f"| {longer['mib_per_s'][name]:.1f} "
                             f"| {user:.2f} + {system:.2f} |")  # fmt: skip
            lines += ["", f"trio-echo-client runs at {_x(results.client['x_nc'])} the speed of "
                      f"`nc -N` on {results.client['mib']} MiB and at {_x(longer['x_nc'])} on "
                      f"{longer['mib']} MiB (echo checked byte for byte). Its start-up alone "
                      "(`python -c 'import trio_echo.client'`) takes "
                      f"{results.client['startup_seconds']:.3f} s, "
                      f"{_x(results.client.get('x_import_trio', 0.0))} the "
                      f"{results.client.get('trio_import_seconds', 0.0):.3f} s of `import trio` "
                      "alone (medians of alternating runs, bytecode cached)."]  # fmt: skip
    if results.workers:
        lines += [
            "",
            "### `--workers`: 1 KiB messages, msg/s (x the 1-worker figure on the same cores)",
            "",
            "| setup | conns | msg/s | x 1 worker |",
            "|---|---:|---:|---:|",
        ]
        groups: dict[tuple[str, int], list[float]] = {}
        for item in results.workers:
            if "error" not in item:
                groups.setdefault((item["setup"], item["conns"]), []).append(item["msg_per_s"])
        med = {key: statistics.median(values) for key, values in groups.items()}
        for (setup, c), value in med.items():
            base_setup = setup.replace("2 workers, both on", "1 worker,").replace(
                "2 workers,", "1 worker,"
            )
            base = med.get((base_setup, c))
            lines.append(f"| {setup} | {c:,} | {value:,.0f} | "
                         f"{_x(value / base if base else None)} |")  # fmt: skip
    if results.tls_runs:
        lines += tls_markdown(results)
    if results.ws_runs:
        lines += ws_markdown(results)
    if results.udp_runs:
        lines += udp_markdown(results)
    lines += ["", "### Goals", "", "| goal | figure | met |", "|---|---:|---|"]
    for item in results.goals:
        met = {True: "yes", False: "**no**", None: "not measured"}[item["met"]]
        lines.append(f"| {item['goal']} | {_cell(item['figure'], 2)} | {met} |")
    if chart:
        lines += ["", f"![throughput chart]({chart})"]
    return "\n".join(lines) + "\n"


def draw(results: Results, path: Path) -> bool:
    """A PNG: one panel per message size, a group of bars per connection count."""
    try:
        matplotlib: Any = importlib.import_module("matplotlib")
    except ImportError:
        return False
    matplotlib.use("Agg")
    plt: Any = importlib.import_module("matplotlib.pyplot")
    sizes, conns = results.options["sizes"], results.options["conns"]
    names = list(results.servers)
    fig, axes = plt.subplots(1, len(sizes), figsize=(6 * len(sizes), 5), squeeze=False)
    width = 0.8 / len(names)
    for ax, size in zip(axes[0], sizes, strict=True):
        metric = "mib_per_s" if size >= 100 * KiB else "msg_per_s"
        for i, name in enumerate(names):
            values = []
            for c in conns:
                row = _row(results, name, size, c)
                values.append(row[metric] or 0 if row else 0)
            ax.bar([x + i * width for x in range(len(conns))], values, width, label=name)
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(conns))], [str(c) for c in conns])
        ax.set_xlabel("connections")
        ax.set_ylabel("MiB/s" if metric == "mib_per_s" else "messages/s")
        ax.set_title(f"{size // KiB} KiB messages ({read_size_for(size) // KiB} KiB reads)")
    axes[0][0].legend(fontsize="small")
    fig.suptitle(f"Echo servers, ping-pong, server on one core ({results.date[:10]})")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


def publish(text: str, out: Path, chart: Path | None, results_json: Path) -> None:
    """Write the results between the markers of scripts/bench/benchmarks.md, and beside it."""
    doc = HERE / "benchmarks.md"
    current = (
        doc.read_text() if doc.exists() else f"# Benchmarks\n\n{RESULTS_START}\n{RESULTS_END}\n"
    )
    head, rest = current.split(RESULTS_START, 1)
    _, tail = rest.split(RESULTS_END, 1)
    doc.write_text(f"{head}{RESULTS_START}\n{text}{RESULTS_END}{tail}")
    shutil.copyfile(results_json, HERE / "benchmarks.json")
    if chart:
        shutil.copyfile(chart, HERE / "benchmarks.png")


def load(path: Path) -> Results:
    """The results of a run, as `run.py` wrote them."""
    return Results(**json.loads(path.read_text()))


def main(argv: Sequence[str] | None = None) -> int:
    """The report again from a run's results.json: its benchmarks.md (printed too) and chart
    beside it."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python scripts/bench/report.py RESULTS.json", file=sys.stderr)
        return 2
    results_json = Path(args[0])
    results = load(results_json)
    chart = results_json.with_name("benchmarks.png")
    text = markdown(results, chart.name if draw(results, chart) else None)
    results_json.with_name("benchmarks.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
