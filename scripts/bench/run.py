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

All traffic stays on 127.0.0.1. Every server is started by this script in its own session and
stopped by its process group; every load run is bounded by its duration.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import importlib.util
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from trio_echo.tls import ephemeral_certificate  # the package under test (pip install -e .)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PYTHON = sys.executable
HOST = "127.0.0.1"
KiB = 1024

SIZES = (1 * KiB, 10 * KiB, 100 * KiB)
CONNS = (1, 10, 100, 1000)
IDLE_CONNS = (1000, 10000)
BULK_READ = 64 * KiB
TUTORIAL, UVLOOP = "trio-tutorial", "uvloop-streams"
PORTABLE = "trio-echo-portable"
START_TIMEOUT = 20.0
BUILD = Path(tempfile.gettempdir()) / f"trio-echo-bench-{os.getuid()}"  # compiled C, not in git
RESULTS_START = "<!-- results:start (written by scripts/bench/run.py --publish) -->"
RESULTS_END = "<!-- results:end -->"


def read_size_for(size: int) -> int:
    return BULK_READ if size >= 100 * KiB else KiB


# ---- the servers under test ------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    name: str
    about: str
    argv: Callable[[int, int], list[str]]  # (port, read size) -> command
    needs: str = ""  # a Python module or a program; without it the server is left out
    logged: bool = False  # stderr goes to a log file (else to /dev/null)
    rss: bool = False  # measured with idle connections too


def trio_echo(*extra: str, portable: bool = False) -> Callable[[int, int], list[str]]:
    """trio-echo's server; `portable`: with every Linux acceleration off (TRIO_ECHO_PORTABLE,
    trio_echo/capabilities.py), as it runs where they do not exist (Windows)."""
    prefix = ["env", "TRIO_ECHO_PORTABLE=1"] if portable else []

    def argv(port: int, read_size: int) -> list[str]:
        return [
            *prefix, PYTHON, "-m", "trio_echo.server", "--port", str(port),
            "--chunk-size", str(read_size), "--max-connections", "20000", *extra,
        ]  # fmt: skip

    return argv


def reference(kind: str) -> Callable[[int, int], list[str]]:
    def argv(port: int, read_size: int) -> list[str]:
        return [PYTHON, str(HERE / "ref_servers.py"), kind, str(port), str(read_size)]

    return argv


def socat(port: int, read_size: int) -> list[str]:
    listen = f"TCP-LISTEN:{port},bind={HOST},reuseaddr,fork,backlog=4096,nodelay"
    return ["socat", f"-b{read_size}", listen, "PIPE"]


SERVERS = (
    Server("trio-echo", "trio-echo `--quiet` (events without data events, to a file)",
           trio_echo("--quiet"), logged=True, rss=True),
    Server("trio-echo-logged", "trio-echo, every event logged as text to a file",
           trio_echo(), logged=True),
    Server(PORTABLE, "trio-echo `--quiet`, the portable path (TRIO_ECHO_PORTABLE=1: trio's "
           "streams only, as on Windows)", trio_echo("--quiet", portable=True), logged=True),
    Server(TUTORIAL, "trio tutorial: serve_tcp, receive_some, send_all",
           reference(TUTORIAL), rss=True),
    Server("asyncio-streams", "asyncio start_server, read, write, drain",
           reference("asyncio-streams"), rss=True),
    Server("asyncio-protocol", "asyncio Protocol: data_received writes back",
           reference("asyncio-protocol")),
    Server(UVLOOP, "asyncio streams on uvloop", reference(UVLOOP), needs="uvloop", rss=True),
    Server("uvloop-protocol", "asyncio Protocol on uvloop", reference("uvloop-protocol"),
           needs="uvloop"),
    Server("socat", "socat TCP-LISTEN,fork PIPE (a process per connection)", socat,
           needs="socat"),
    Server("c-epoll", "C, one thread, epoll (the ceiling)",
           lambda port, read: [str(BUILD / "c_echo"), str(port), str(read)], rss=True),
)  # fmt: skip


TLS_UVLOOP = "uvloop-streams-tls"
TLS_CONNS = (10, 100)
HANDSHAKE_THREADS = 4  # concurrent connect-handshake-echo-close cycles
HANDSHAKES = ("handshakes", HANDSHAKE_THREADS, "handshakes_per_s")  # workload, conns, metric


def tls_servers(cert: Path) -> tuple[Server, ...]:
    """The TLS servers, all with the same certificate (an ECDSA P-256 key, as --tls makes)."""

    def reference_tls(kind: str) -> Callable[[int, int], list[str]]:
        return lambda port, read: [*reference(kind)(port, read), str(cert)]

    def socat_tls(port: int, read_size: int) -> list[str]:
        listen = (f"OPENSSL-LISTEN:{port},bind={HOST},reuseaddr,fork,backlog=4096,nodelay,"
                  f"cert={cert},verify=0")  # fmt: skip
        return ["socat", f"-b{read_size}", listen, "PIPE"]

    return (
        Server("trio-echo-tls", "trio-echo --tls --quiet", logged=True, rss=True,
               argv=trio_echo("--quiet", "--tls", "--tls-cert", str(cert))),
        Server("trio-echo-portable-tls", "trio-echo --tls --quiet, the portable path "
               "(TRIO_ECHO_PORTABLE=1)", logged=True,
               argv=trio_echo("--quiet", "--tls", "--tls-cert", str(cert), portable=True)),
        Server("trio-tutorial-tls", "trio serve_ssl_over_tcp, receive_some, send_all",
               reference_tls(TUTORIAL), rss=True),
        Server("asyncio-streams-tls", "asyncio start_server(ssl=...), read, write, drain",
               reference_tls("asyncio-streams"), rss=True),
        Server(TLS_UVLOOP, "asyncio streams with ssl on uvloop", reference_tls(UVLOOP),
               needs="uvloop", rss=True),
        Server("socat-tls", "socat OPENSSL-LISTEN,fork PIPE (a process per connection)",
               socat_tls, needs="socat"),
    )  # fmt: skip


UDP_FLOWS = (1, 10)
UDP_ASYNCIO = "asyncio-datagram"


def udp_servers() -> tuple[Server, ...]:
    return (
        Server("trio-echo-udp", "trio-echo --udp --no-tcp --quiet, guards on (the rate limit "
               "set high enough never to bite)", logged=True,
               argv=trio_echo("--quiet", "--udp", "--no-tcp", "--udp-rate", "1000000000")),
        Server(UDP_ASYNCIO, "asyncio DatagramProtocol: datagram_received sends back",
               reference(UDP_ASYNCIO)),
        Server("uvloop-datagram", "the same on uvloop", reference("uvloop-datagram"),
               needs="uvloop"),
        Server("c-udp", "C, one thread, blocking recvfrom and sendto (the ceiling)",
               lambda port, read: [str(BUILD / "udp_load"), "serve", str(port)]),
    )  # fmt: skip


def available(server: Server) -> bool:
    if not server.needs:
        return True
    if shutil.which(server.needs):
        return True
    return importlib.util.find_spec(server.needs) is not None


# ---- processes ---------------------------------------------------------------------------------


def build() -> bool:
    """Compile the C load generator and ceiling server with the system cc, and the TLS load
    generator where OpenSSL's headers are installed; whether the TLS one was built."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        sys.exit("run.py: error: no C compiler (`cc`): install one (Debian: apt-get install gcc)")
    BUILD.mkdir(exist_ok=True)
    for name in ("load", "c_echo", "udp_load"):
        subprocess.run([cc, "-O2", "-o", str(BUILD / name), str(HERE / f"{name}.c")], check=True)
    if not Path("/usr/include/openssl/ssl.h").exists():
        return False
    subprocess.run([cc, "-O2", "-o", str(BUILD / "tls_load"), str(HERE / "tls_load.c"),
                    "-lssl", "-lcrypto", "-lpthread"], check=True)  # fmt: skip
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def pinned(core: int | None, argv: list[str]) -> list[str]:
    return argv if core is None else ["taskset", "-c", str(core), *argv]


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    port: int

    @property
    def pid(self) -> int:
        return self.process.pid


def tcp_ready(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=1).close()
    except OSError:
        return False
    return True


def udp_ready(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.settimeout(0.2)
        try:
            probe.sendto(b"ready?", (HOST, port))
            return probe.recv(100) == b"ready?"
        except OSError:
            return False


@contextlib.contextmanager
def running(
    command: Callable[[int], list[str]], log: Path | None, ready: Callable[[int], bool] = tcp_ready
) -> Iterator[Running]:
    """Start a server in its own session, wait until it answers, stop its whole group after."""
    port = free_port()
    full = command(port)
    with open(log, "ab") if log else open(os.devnull, "wb") as err:
        process = subprocess.Popen(
            full, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
            cwd=ROOT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:  # a bounded wait for the port: foreign servers (socat) announce nothing
            if process.poll() is not None:
                raise RuntimeError(f"{full[0]} exited with status {process.returncode} at start")
            if ready(port):
                break
            if time.monotonic() > deadline:
                message = f"{' '.join(full)} did not listen within {START_TIMEOUT} s"
                raise RuntimeError(message) from None
            time.sleep(0.02)
        yield Running(process, port)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def ping(port: int, conns: int, size: int, seconds: float, warmup: float, core: int | None) -> Any:
    argv = [str(BUILD / "load"), "ping", HOST, str(port), str(conns), str(size), str(seconds),
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


def idle_rss(port: int, pid: int, conns: int, tls: bool = False) -> float:
    """RSS growth per connection, in KiB, while `conns` connections sit idle."""
    load_program = str(BUILD / ("tls_load" if tls else "load"))
    warm = subprocess.run([load_program, "idle", HOST, str(port), "1"], input=b"",
                          capture_output=True, timeout=60)  # fmt: skip
    if warm.returncode != 0:
        raise RuntimeError(warm.stderr.decode().strip())
    before = rss_kib(pid)
    load = subprocess.Popen(
        [load_program, "idle", HOST, str(port), str(conns)],
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
    goals: list[dict[str, Any]] = field(default_factory=list)


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
    for server in servers:
        if not server.rss:
            continue

        def idle_command(port: int, server: Server = server) -> list[str]:
            return pinned(opts.server_core, server.argv(port, KiB))

        conns = min(opts.idle_conns)
        with running(idle_command, None) as live:
            try:
                per_conn = idle_rss(live.port, live.pid, conns, tls=True)
            except RuntimeError as exc:
                results.tls_idle.append({"server": server.name, "conns": conns, "error": str(exc)})
                continue
        results.tls_idle.append({"server": server.name, "conns": conns, "kib_per_conn": per_conn})
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
    if results.tls_idle:
        lines += ["", "RSS per idle TLS connection (KiB): " + ", ".join(
            f"{item['server']} {_cell(item.get('kib_per_conn'), 2)} at {item['conns']:,}"
            for item in results.tls_idle)]  # fmt: skip
    return lines


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
        choices=["servers", "idle", "client", "workers", "tls", "udp"],
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
    all_servers = (*SERVERS, *tls_servers(cert), *udp_servers())
    chosen = [s for s in all_servers if not args.only or s.name in args.only]
    udp_names = {s.name for s in udp_servers()}
    datagram = [s for s in chosen if available(s) and s.name in udp_names]
    secure = [s for s in chosen if available(s) and s.name.endswith("-tls")]
    servers = [s for s in chosen if available(s) and s not in secure and s.name not in udp_names]
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
           if "error" in run]  # fmt: skip
    bad += [item for item in results.idle + results.tls_idle if "error" in item]
    if bad or "error" in results.client:
        print(f"run.py: {len(bad) + ('error' in results.client)} measurement(s) failed; see above")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
