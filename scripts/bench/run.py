#!/usr/bin/env python3
"""The benchmark: trio-echo against reference echo servers, measured the same way, same run.

    python scripts/bench/run.py            # the full run: about 15 minutes
    python scripts/bench/run.py --quick    # under a minute: a smoke test, not a measurement

Every server runs pinned to one core (`taskset`, `--server-core`) and the C load generator
to another (`--load-core`). Each round starts every server in turn (in a rotated order, so
that no server always runs first or last), drives each workload against it, and stops it;
the report gives the median over the rounds, and every figure also as a ratio to the trio
tutorial server and to uvloop streams measured in the same run. Workload: ping-pong (send a
message, wait for all of it to come back, check every byte, repeat) with 1 KiB, 10 KiB and
100 KiB messages over 1, 10, 100 and 1,000 connections. Servers read 1 KiB at a time
(trio-echo's default) for the 1 KiB and 10 KiB messages, and 64 KiB at a time for 100 KiB
(trio-echo `--chunk-size 65536`), wherever their API lets them choose.

Also measured: RSS per idle connection at 1,000 and 10,000 connections; the client, piping
lines through `trio-echo-client` against `nc -N`; `--workers` 1 and 2; and TLS: 1 KiB
ping-pong at 10 and 100 connections and full handshakes per second against the trio
tutorial, asyncio and uvloop streams with `ssl` and `socat OPENSSL-LISTEN`, with RSS per idle
TLS connection (`tls_load.c`, built where OpenSSL's headers are: Debian's libssl-dev).

The C programs (`load.c`, `c_echo.c`) are compiled with the system `cc` at the start. uvloop
and matplotlib are optional (`pip install -e '.[bench]'`): without them the uvloop servers
and the chart are left out, and said to be. Results go to `--out`: results.json,
benchmarks.md and benchmarks.png; `--publish` also writes them beside this script, where
the Markdown lands between the markers of `benchmarks.md`.

The parts: `servers.py` (what is compared, and how each is built, started and stopped),
`measure.py` (the workloads against the running servers), `report.py` (the results' format,
the statistics, goals, Markdown and chart: a pure function of results.json, which
`python scripts/bench/report.py results.json` turns into the report again); this file runs
them in order.

All traffic stays on 127.0.0.1. Every server is started by this script in its own session and
stopped by its process group; every load run is bounded by its duration.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from measure import (
    Options,
    machine,
    measure_client,
    measure_idle,
    measure_servers,
    measure_tls,
    measure_udp,
    measure_workers,
    measure_ws,
)
from report import Results, draw, goals, markdown, medians, publish
from servers import (
    CONNS,
    HERE,
    HOST,
    IDLE_CONNS,
    SERVERS,
    SIZES,
    KiB,
    available,
    build,
    tls_servers,
    udp_servers,
    ws_servers,
)

from trio_echo.tls import ephemeral_certificate  # the package under test (pip install -e .)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1 KiB messages, 1 and 10 connections, one short round: a smoke test",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.5, help="measured per workload")
    parser.add_argument("--warmup", type=float, default=0.3, help="not counted, per workload")
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--load-core", type=int, default=1)
    parser.add_argument("--only", nargs="+", metavar="SERVER", help="measure just these servers")
    parser.add_argument(
        "--skip",
        nargs="+",
        default=[],
        metavar="PART",
        choices=["servers", "idle", "client", "workers", "tls", "udp", "ws"],
    )
    parser.add_argument("--out", type=Path, default=HERE / "results", help="where results go")
    parser.add_argument(
        "--publish",
        action="store_true",
        help="also write the results into scripts/bench/benchmarks.md and beside it",
    )
    args = parser.parse_args(argv)  # fmt: skip
    if shutil.which("taskset") is None:
        parser.error("taskset (util-linux) is needed to pin server and load to cores")
    if args.quick:
        opts = Options(1, 0.5, 0.1, (KiB,), (1, 10), (1000,), 5, args.server_core,
                       args.load_core, args.out, False, (10,))  # fmt: skip
    else:
        opts = Options(args.rounds, args.seconds, args.warmup, SIZES, CONNS, IDLE_CONNS, 50,
                       args.server_core, args.load_core, args.out, True)  # fmt: skip
    opts.out.mkdir(parents=True, exist_ok=True)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # for 10,000 idle connections
    if max(opts.idle_conns) + 100 > hard:
        opts.idle_conns = tuple(c for c in opts.idle_conns if c + 100 <= hard)
    built_tls = build()
    cert = opts.out / "tls-cert.pem"
    cert_pem, key_pem = ephemeral_certificate(["localhost", HOST])
    cert.write_bytes(key_pem + cert_pem)
    all_servers = (*SERVERS, *tls_servers(cert), *udp_servers(), *ws_servers())
    chosen = [s for s in all_servers if not args.only or s.name in args.only]
    udp_names = {s.name for s in udp_servers()}
    ws_names = {s.name for s in ws_servers()}
    datagram = [s for s in chosen if available(s) and s.name in udp_names]
    sockets = [s for s in chosen if available(s) and s.name in ws_names]
    secure = [s for s in chosen if available(s) and s.name.endswith("-tls")]
    servers = [s for s in chosen if available(s) and s not in secure
               and s.name not in udp_names | ws_names]  # fmt: skip
    results = Results(
        machine=machine(),
        command="python scripts/bench/run.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        options={k: v for k, v in asdict(opts).items() if k != "out"},
        servers={s.name: s.about for s in servers},
        left_out={s.name: f"needs {s.needs}" for s in chosen if not available(s)},
        tls_servers={s.name: s.about for s in secure},
        udp_servers={s.name: s.about for s in datagram},
        ws_servers={s.name: s.about for s in sockets},
    )
    if not built_tls:
        results.left_out["TLS"] = "needs OpenSSL's headers for tls_load.c (libssl-dev)"
    for name, why in results.left_out.items():
        print(f"run.py: leaving out {name}: {why}", flush=True)
    if "servers" not in args.skip:
        print("ping-pong:", flush=True)
        measure_servers(servers, opts, results)
        results.medians = medians(results.runs)
    if "idle" not in args.skip:
        print("idle connections:", flush=True)
        measure_idle(servers, opts, results)
    if "client" not in args.skip:
        print("client:", flush=True)
        measure_client(opts, results)
    if opts.workers and "workers" not in args.skip:
        print("workers:", flush=True)
        measure_workers(opts, results)
    if built_tls and secure and "tls" not in args.skip:
        print("TLS:", flush=True)
        measure_tls(secure, opts, results)
    if datagram and "udp" not in args.skip:
        print("UDP:", flush=True)
        measure_udp(datagram, opts, results)
    if sockets and "ws" not in args.skip:
        print("WebSocket:", flush=True)
        measure_ws(sockets, opts, results)
    results.goals = goals(results)
    results_json = opts.out / "results.json"
    results_json.write_text(json.dumps(asdict(results), indent=1) + "\n")
    chart = opts.out / "benchmarks.png"
    drawn = draw(results, chart)
    if not drawn:
        print("run.py: no chart: matplotlib is not installed (pip install -e '.[bench]')")
    text = markdown(results, "benchmarks.png" if drawn else None)
    (opts.out / "benchmarks.md").write_text(text)
    print()
    print(text)
    if args.publish:
        publish(text, opts.out, chart if drawn else None, results_json)
    bad = [run for run in results.runs + results.workers + results.tls_runs + results.udp_runs
           + results.ws_runs if "error" in run]  # fmt: skip
    bad += [item for item in results.idle + results.tls_idle + results.ws_idle if "error" in item]
    if bad or "error" in results.client:
        print(f"run.py: {len(bad) + ('error' in results.client)} measurement(s) failed; see above")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
