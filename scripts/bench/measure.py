"""The measurements: each workload driven against the running servers by the C load
generators, the figures gathered into `Results`. Nothing here formats them."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from report import Results
from servers import (
    BUILD,
    BULK_READ,
    HANDSHAKE_THREADS,
    HOST,
    PYTHON,
    TLS_CONNS,
    UDP_FLOWS,
    WS_CONNS,
    KiB,
    Server,
    pinned,
    read_size_for,
    running,
    tcp_ready,
    trio_echo,
    udp_ready,
)


def ping(
    port: int,
    conns: int,
    size: int,
    seconds: float,
    warmup: float,
    core: int | None,
    mode: str = "ping",
) -> Any:
    argv = [str(BUILD / "load"), mode, HOST, str(port), str(conns), str(size), str(seconds),
            str(warmup)]  # fmt: skip
    result = subprocess.run(
        pinned(core, argv), capture_output=True, text=True, timeout=seconds + warmup + 120
    )
    if not result.stdout.strip():
        return {"error": result.stderr.strip() or f"load exited {result.returncode}"}
    figures = json.loads(result.stdout)
    if result.returncode != 0:
        figures["error"] = result.stderr.strip()
    return figures


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def idle_rss(port: int, pid: int, conns: int, tls: bool = False, mode: str = "idle") -> float:
    """RSS growth per connection, in KiB, while `conns` connections sit idle."""
    load_program = str(BUILD / ("tls_load" if tls else "load"))
    warm = subprocess.run([load_program, mode, HOST, str(port), "1"], input=b"",
                          capture_output=True, timeout=60)  # fmt: skip
    if warm.returncode != 0:
        raise RuntimeError(warm.stderr.decode().strip())
    before = rss_kib(pid)
    load = subprocess.Popen(
        [load_program, mode, HOST, str(port), str(conns)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert load.stdin is not None
    assert load.stdout is not None
    assert load.stderr is not None
    try:
        ready = load.stdout.readline().decode()
        if not ready.startswith("ready"):
            raise RuntimeError(load.stderr.read().decode().strip() or "idle load failed")
        # The server has echoed a byte on every connection, so each one is set up.
        return (rss_kib(pid) - before) / conns
    finally:
        load.stdin.close()
        load.wait(60)


# ---- the measurements --------------------------------------------------------------------------


@dataclass
class Options:
    rounds: int
    seconds: float
    warmup: float
    sizes: tuple[int, ...]
    conns: tuple[int, ...]
    idle_conns: tuple[int, ...]
    client_mib: int
    server_core: int | None
    load_core: int | None
    out: Path
    workers: bool
    tls_conns: tuple[int, ...] = TLS_CONNS


def start_all(
    stack: contextlib.ExitStack,
    servers: Sequence[Server],
    opts: Options,
    read_size: int,
    ready: Callable[[int], bool] = tcp_ready,
) -> dict[str, int]:
    """Start every server (each stopped when `stack` closes); their ports by name."""
    ports: dict[str, int] = {}
    for server in servers:
        log = opts.out / f"{server.name}.log" if server.logged else None

        def command(port: int, server: Server = server) -> list[str]:
            return pinned(opts.server_core, server.argv(port, read_size))

        ports[server.name] = stack.enter_context(running(command, log, ready)).port
    return ports


def measure_servers(servers: Sequence[Server], opts: Options, results: Results) -> None:
    """Every server is up at once (idle ones cost nothing), and each workload is run against
    all of them back to back, in an order that rotates: the servers compared in a ratio are
    measured seconds apart, so that the machine's slow drifts hit them alike."""
    reads = sorted({read_size_for(size) for size in opts.sizes})
    turn = 0
    for round_no in range(opts.rounds):
        for read_size in reads:
            with contextlib.ExitStack() as stack:
                ports = start_all(stack, servers, opts, read_size)
                for size in opts.sizes:
                    if read_size_for(size) != read_size:
                        continue
                    for conns in opts.conns:
                        shift, turn = turn % len(servers), turn + 1
                        for server in [*servers[shift:], *servers[:shift]]:
                            figures = ping(ports[server.name], conns, size, opts.seconds,
                                           opts.warmup, opts.load_core)  # fmt: skip
                            run = {"server": server.name, "round": round_no + 1, "size": size,
                                   "conns": conns, "read_size": read_size, **figures}  # fmt: skip
                            results.runs.append(run)
                            print(_progress(run), flush=True)


def _progress(run: dict[str, Any]) -> str:
    where = f"{run['server']:<17} {run['size'] // KiB:>4} KiB x {run['conns']:>4}"
    if "error" in run:
        return f"  round {run['round']}  {where}  ERROR {run['error']}"
    return (
        f"  round {run['round']}  {where}  {run['msg_per_s']:>10,.0f} msg/s "
        f"{run['mib_per_s']:>8.1f} MiB/s  p50 {run['p50_us']:>6} us  p99 {run['p99_us']:>6} us"
    )


def measure_idle(servers: Sequence[Server], opts: Options, results: Results) -> None:
    for server in servers:
        if not server.rss:
            continue
        for conns in opts.idle_conns:

            def command(port: int, server: Server = server) -> list[str]:
                return pinned(opts.server_core, server.argv(port, KiB))

            log = opts.out / f"{server.name}.idle.log" if server.logged else None
            with running(command, log) as live:
                try:
                    per_conn = idle_rss(live.port, live.pid, conns)
                except RuntimeError as exc:
                    results.idle.append({"server": server.name, "conns": conns, "error": str(exc)})
                    print(f"  idle {server.name:<17} x {conns:>5}: ERROR {exc}", flush=True)
                    continue
            results.idle.append({"server": server.name, "conns": conns, "kib_per_conn": per_conn})
            print(f"  idle {server.name:<17} x {conns:>5}: {per_conn:.2f} KiB per connection",
                  flush=True)  # fmt: skip


def lines_file(path: Path, mib: int) -> None:
    """Text lines of 1 to 200 bytes, none of them `exit`, `mib` MiB in all."""
    words = b"the quick brown fox jumps over the lazy dog 0123456789 ".split()
    target, written, n = mib * 1024 * 1024, 0, 0
    with path.open("wb") as out:
        while written < target:
            line = b" ".join(words[(n + i) % len(words)] for i in range(n % 37 + 1))[:199] + b"\n"
            line = line[: target - written] if written + len(line) > target else line
            out.write(line)
            written += len(line)
            n += 1


def digest(path: Path) -> str:
    with path.open("rb") as data:
        return hashlib.file_digest(data, "sha256").hexdigest()


def timed(
    argv: list[str], stdin: IO[bytes], stdout: IO[bytes], stderr: IO[bytes], limit: float
) -> tuple[int, float, resource.struct_rusage]:
    """Run `argv` to its end: its exit status, wall seconds and CPU use; killed after `limit`.

    Not `subprocess.run(timeout=...)`: with a timeout it polls with sleeps of up to 50 ms,
    which rounded a 0.09 s run up to 0.11 s and 0.23 s to 0.27 s (measured); here the
    waiting is one blocking `wait4`, and a timer does the killing.
    """
    began = time.perf_counter()
    process = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=stderr)
    killer = threading.Timer(limit, process.kill)
    killer.start()
    try:
        _pid, status, usage = os.wait4(process.pid, 0)
    finally:
        killer.cancel()
    took = time.perf_counter() - began
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped: Popen must not wait
    return process.returncode, took, usage


def measure_client(opts: Options, results: Results) -> None:
    """Pipe the same lines through `nc -N` and `trio-echo-client`, against the C server: the
    goal's size, then ten times as much (start-up then weighs a tenth as much); and time
    the client's start-up alone (Python starting and importing it, nothing sent)."""
    if shutil.which("nc") is None:
        results.client = {"error": "nc (netcat-openbsd) is not installed"}
        return
    work = opts.out / "client"
    work.mkdir(exist_ok=True)
    clients: dict[str, Callable[[int], list[str]]] = {
        "nc -N": lambda port: ["nc", "-N", HOST, str(port)],
        "trio-echo-client": lambda port: [PYTHON, "-m", "trio_echo.client", "--port", str(port)],
    }

    def server(port: int) -> list[str]:
        return pinned(opts.server_core, [str(BUILD / "c_echo"), str(port), str(BULK_READ)])

    def pipe(mib: int, port: int) -> dict[str, Any]:
        source = work / "lines.txt"
        lines_file(source, mib)
        want = digest(source)
        times: dict[str, list[float]] = {name: [] for name in clients}
        cpu: dict[str, list[tuple[float, float]]] = {name: [] for name in clients}
        # Five rounds in a full run: on these machines a program writing 500 MiB into fresh
        # page cache now and then spends twice the kernel time copying (nc as much as we),
        # so three rounds left the median to chance.
        for _ in range(max(opts.rounds, 5) if opts.workers else opts.rounds):
            for name, argv in clients.items():
                echoed = work / "echoed.txt"
                with source.open("rb") as stdin, echoed.open("wb") as stdout, \
                        (work / "client-events.log").open("wb") as stderr:  # fmt: skip
                    # The input just written and the last run's output are still being
                    # written back to disk: done now, not during the next program's run
                    # (measured: it cost whichever ran then up to 2x in kernel time).
                    os.sync()
                    status, took, usage = timed(pinned(opts.load_core, argv(port)), stdin,
                                                stdout, stderr, limit=300)  # fmt: skip
                cpu[name].append((usage.ru_utime, usage.ru_stime))
                if status != 0 or digest(echoed) != want:
                    raise RuntimeError(f"{name}: status {status}, or the echo differs "
                                       f"from the input ({mib} MiB)")  # fmt: skip
                times[name].append(took)
        median = {name: statistics.median(values) for name, values in times.items()}
        return {
            "mib": mib,
            "seconds": median,
            "mib_per_s": {name: mib / took for name, took in median.items()},
            "x_nc": median["nc -N"] / median["trio-echo-client"],
            # CPU seconds, medians: (user, system); where a program's time goes
            "cpu": {
                name: [statistics.median(part) for part in zip(*values, strict=True)]
                for name, values in cpu.items()
            },
        }

    # Start-up: `import trio_echo.client` against `import trio` itself, alternating, as a
    # user's machine runs them: with the bytecode cache (written by a first, uncounted run).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    imports = {"trio": "import trio", "trio_echo.client": "import trio_echo.client"}
    import_times: dict[str, list[float]] = {name: [] for name in imports}
    for run in range(1 + (20 if opts.workers else 5)):  # `workers`: the full run, not --quick
        for name, statement in imports.items():
            began = time.perf_counter()
            subprocess.run(pinned(opts.load_core, [PYTHON, "-c", statement]), check=True,
                           env=env)  # fmt: skip
            if run:
                import_times[name].append(time.perf_counter() - began)
    starts = import_times["trio_echo.client"]
    try:
        with running(server, None) as live:
            results.client = pipe(opts.client_mib, live.port)
            results.client["longer"] = pipe(opts.client_mib * 10, live.port)
    except RuntimeError as exc:
        results.client = {"error": str(exc)}
        return
    results.client["startup_seconds"] = statistics.median(starts)
    results.client["trio_import_seconds"] = statistics.median(import_times["trio"])
    results.client["x_import_trio"] = (
        results.client["startup_seconds"] / results.client["trio_import_seconds"]
    )
    print(
        f"  client: {results.client['mib_per_s']}, x nc {results.client['x_nc']:.2f}; "
        f"{results.client['longer']['mib']} MiB: x nc {results.client['longer']['x_nc']:.2f}; "
        f"start-up {results.client['startup_seconds']:.3f} s "
        f"({results.client['x_import_trio']:.2f}x `import trio`)",
        flush=True,
    )


WORKER_SETUPS = (
    # (label, workers, server cores, load core)
    ("1 worker, core 0; load on core 1", 1, "0", 1),
    ("2 workers, both on core 0; load on core 1", 2, "0", 1),
    ("1 worker, cores 0-1; load on core 1 too", 1, "0,1", 1),
    ("2 workers, cores 0-1; load on core 1 too", 2, "0,1", 1),
)


def measure_workers(opts: Options, results: Results) -> None:
    size = KiB
    conn_counts: list[int] = [c for c in (10, 100) if c in opts.conns] or [opts.conns[-1]]
    for round_no in range(opts.rounds):
        for label, workers, cores, load_core in WORKER_SETUPS:

            def command(port: int, workers: int = workers, cores: str = cores) -> list[str]:
                argv = trio_echo("--quiet", "--workers", str(workers))(port, KiB)
                return ["taskset", "-c", cores, *argv]

            with running(command, opts.out / "workers.log") as live:
                for conns in conn_counts:
                    figures = ping(live.port, conns, size, opts.seconds, opts.warmup, load_core)
                    results.workers.append({"setup": label, "workers": workers, "conns": conns,
                                            "round": round_no + 1, **figures})  # fmt: skip
                    print(f"  {label:<44} x {conns:>4}: "
                          f"{figures.get('msg_per_s', 0):>10,.0f} msg/s", flush=True)  # fmt: skip


def tls_load(mode: str, port: int, *args: object, core: int | None, timeout: float) -> Any:
    argv = [str(BUILD / "tls_load"), mode, HOST, str(port), *map(str, args)]
    result = subprocess.run(pinned(core, argv), capture_output=True, text=True, timeout=timeout)
    if not result.stdout.strip():
        return {"error": result.stderr.strip() or f"tls_load exited {result.returncode}"}
    figures = json.loads(result.stdout)
    if result.returncode != 0:
        figures["error"] = result.stderr.strip()
    return figures


def measure_tls(servers: Sequence[Server], opts: Options, results: Results) -> None:
    """1 KiB ping-pong over TLS and full handshakes per second, every TLS server up at once
    and each workload run against all of them back to back in a rotating order, as for
    plain TCP; then RSS per idle TLS connection."""
    limit = opts.seconds + opts.warmup + 120
    turn = 0
    for round_no in range(opts.rounds):
        with contextlib.ExitStack() as stack:
            ports = start_all(stack, servers, opts, KiB)
            workloads: list[tuple[str, int]] = [("ping", c) for c in opts.tls_conns]
            workloads.append(("handshakes", HANDSHAKE_THREADS))
            for mode, conns in workloads:
                shift, turn = turn % len(servers), turn + 1
                for server in [*servers[shift:], *servers[:shift]]:
                    extra = (KiB,) if mode == "ping" else ()
                    figures = tls_load(mode, ports[server.name], conns, *extra, opts.seconds,
                                       opts.warmup, core=opts.load_core, timeout=limit)  # fmt: skip
                    run = {"server": server.name, "round": round_no + 1, "workload": mode,
                           "conns": conns, **figures}  # fmt: skip
                    results.tls_runs.append(run)
                    rate = figures.get("msg_per_s", figures.get("handshakes_per_s", 0))
                    unit = "msg/s" if mode == "ping" else "handshakes/s"
                    print(f"  round {round_no + 1}  {server.name:<20} {mode:<10} x {conns:>4}  "
                          f"{rate:>10,.0f} {unit}  {figures.get('error', '')}",
                          flush=True)  # fmt: skip
    idle_each([s for s in servers if s.rss], opts, results.tls_idle, tls=True)


def measure_ws(servers: Sequence[Server], opts: Options, results: Results) -> None:
    """1 KiB WebSocket ping-pong (one binary message each way, checked byte for byte), every
    WebSocket server up at once, rotating order, ratios within a round; then RSS per idle
    WebSocket connection."""
    turn = 0
    for round_no in range(opts.rounds):
        with contextlib.ExitStack() as stack:
            ports = start_all(stack, servers, opts, KiB)
            for conns in WS_CONNS:
                shift, turn = turn % len(servers), turn + 1
                for server in [*servers[shift:], *servers[:shift]]:
                    figures = ping(ports[server.name], conns, KiB, opts.seconds, opts.warmup,
                                   opts.load_core, mode="wsping")  # fmt: skip
                    run = {"server": server.name, "round": round_no + 1, "workload": "ws",
                           "conns": conns, **figures}  # fmt: skip
                    results.ws_runs.append(run)
                    print(f"  round {round_no + 1}  {server.name:<20} ws x {conns:>4}  "
                          f"{figures.get('msg_per_s', 0):>10,.0f} msg/s  "
                          f"{figures.get('error', '')}", flush=True)  # fmt: skip
    idle_each(servers, opts, results.ws_idle, mode="wsidle")


def idle_each(
    servers: Sequence[Server],
    opts: Options,
    into: list[dict[str, Any]],
    *,
    tls: bool = False,
    mode: str = "idle",
) -> None:
    """RSS per idle connection of each server, at the smallest idle count, into `into`."""
    conns = min(opts.idle_conns)
    for server in servers:

        def idle_command(port: int, server: Server = server) -> list[str]:
            return pinned(opts.server_core, server.argv(port, KiB))

        with running(idle_command, None) as live:
            try:
                per_conn = idle_rss(live.port, live.pid, conns, tls=tls, mode=mode)
            except RuntimeError as exc:
                into.append({"server": server.name, "conns": conns, "error": str(exc)})
                continue
        into.append({"server": server.name, "conns": conns, "kib_per_conn": per_conn})
        print(f"  idle {server.name:<20} x {conns:>5}: {per_conn:.2f} KiB per connection",
              flush=True)  # fmt: skip


def measure_udp(servers: Sequence[Server], opts: Options, results: Results) -> None:
    """1 KiB datagram ping-pong with 1 and 10 flows (each from its own loopback address),
    every UDP server up at once, rotating order, ratios within a round."""
    turn = 0
    for round_no in range(opts.rounds):
        with contextlib.ExitStack() as stack:
            ports = start_all(stack, servers, opts, KiB, udp_ready)
            for flows in UDP_FLOWS:
                shift, turn = turn % len(servers), turn + 1
                for server in [*servers[shift:], *servers[:shift]]:
                    argv = [str(BUILD / "udp_load"), "ping", HOST, str(ports[server.name]),
                            str(flows), str(KiB), str(opts.seconds), str(opts.warmup)]  # fmt: skip
                    figures = udp_ping(argv, opts.load_core, opts.seconds + opts.warmup + 60)
                    run = {"server": server.name, "round": round_no + 1, "workload": "udp",
                           "conns": flows, **figures}  # fmt: skip
                    results.udp_runs.append(run)
                    print(f"  round {round_no + 1}  {server.name:<16} udp x {flows:>3}  "
                          f"{figures.get('msg_per_s', 0):>10,.0f} datagrams/s  "
                          f"lost {figures.get('lost', '-')}", flush=True)  # fmt: skip


def udp_ping(argv: list[str], core: int | None, timeout: float) -> Any:
    done = subprocess.run(pinned(core, argv), capture_output=True, text=True, timeout=timeout)
    if not done.stdout.strip():
        return {"error": done.stderr.strip() or f"udp_load exited {done.returncode}"}
    return json.loads(done.stdout)


def machine() -> dict[str, Any]:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break

    def version(module: str) -> str:
        try:
            return str(importlib.import_module(module).__version__)
        except ImportError:
            return "not installed"

    return {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(), "trio": version("trio"),
            "uvloop": version("uvloop")}  # fmt: skip
