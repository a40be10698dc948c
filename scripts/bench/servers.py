"""The servers the benchmark compares, and how each is built, started, pinned to a core and
stopped (by its process group). Nothing here measures."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

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
WITH_METRICS = "trio-echo-metrics"
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
    Server(WITH_METRICS, "trio-echo `--quiet --metrics 0` (counting for Prometheus)",
           trio_echo("--quiet", "--metrics", "0"), logged=True),
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


WS_CONNS = (10, 100)
WS_ASYNCIO = "websockets"
WS_UVLOOP = "websockets-uvloop"


def ws_servers() -> tuple[Server, ...]:
    """The WebSocket echo servers: ours at /ws of --http, and the `websockets` library's."""

    def ours(port: int, read_size: int) -> list[str]:
        return [PYTHON, "-m", "trio_echo.server", "--port", "0", "--http", str(port), "--quiet",
                "--max-connections", "20000"]  # fmt: skip

    return (
        Server("trio-echo-ws", "trio-echo --http --quiet: the WebSocket echo at /ws", ours,
               logged=True, rss=True),
        Server(WS_ASYNCIO, "the websockets library's echo server (its docs' first example), "
               "asyncio", reference(WS_ASYNCIO), needs="websockets", rss=True),
        Server(WS_UVLOOP, "the same on uvloop", reference(WS_UVLOOP), needs="uvloop", rss=True),
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
