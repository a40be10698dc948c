"""The lab's fleet: trio-echo behind a real HAProxy, and what happens when a backend stops.

HAProxy runs in the router namespace with a configuration written for the run
(`HAPROXY_CONFIG`): it balances REMOTE's connections over trio-echo servers in `local` and
`vm`, sends them a PROXY v2 header (`send-proxy-v2`) and checks their readiness
(`option httpchk GET /readyz` on their `--metrics` port: 503 from the moment a drain begins).
Three cells (`run_fleet_cells`): REMOTE via HAProxy (both backends reached, both see
REMOTE's real address), the same for the pages' WebSocket (HAProxy's `pages` front, checked
with `option httpchk GET /`), and FAILOVER (the `vm` backend gets SIGTERM under load: its
sessions in flight drain, HAProxy marks it down, new sessions go to `local`, no client sees a
wrong byte).

`python -m trio_echo.fleet load HOST PORT WORKERS SECONDS` is the load, run in REMOTE: each
worker repeats a session (connect, send 32 KiB while reading, half-close, read to the end)
until SECONDS have passed, and the totals are printed as JSON.
"""

from __future__ import annotations

import json
import random
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final

import trio

from trio_echo import lab_network
from trio_echo.check.probes import payload_without_exit
from trio_echo.i18n import _

FRONT: Final = ("198.18.3.254", 7100)  # HAProxy, in the router, facing REMOTE
BACKEND_PORT: Final = 7101
PAGES_FRONT: Final = ("198.18.3.254", 7180)  # HAProxy's front for the pages and WebSockets
BACKEND_HTTP_PORT: Final = 7181  # the backends' --http
BACKEND_METRICS_PORT: Final = 7102  # the backends' --metrics: HAProxy checks /readyz there
BACKENDS: Final = {"local": "198.18.2.1", "vm": "198.18.1.2"}
BALANCER_SOURCE: Final = "198.18.2.254"  # the router's address towards the backends
SESSION_BYTES: Final = 32 * 1024
HAPROXY_CONFIG: Final = """global
    maxconn 1000
defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    retries 3
    option redispatch
frontend echo
    bind {front}
    default_backend fleet
backend fleet
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
{servers}
frontend pages
    bind {pages_front}
    default_backend pages
backend pages
    balance roundrobin
    option httpchk GET /
    http-check expect status 200
{pages}
"""


def haproxy_config() -> str:
    def servers(port: int, check: str) -> str:
        return "\n".join(
            f"    server {name} {address}:{port} send-proxy-v2 check {check} "
            "inter 200ms fall 2 rise 2"
            for name, address in BACKENDS.items()
        )

    return HAPROXY_CONFIG.format(
        front=f"{FRONT[0]}:{FRONT[1]}",
        servers=servers(BACKEND_PORT, f"port {BACKEND_METRICS_PORT}"),  # /readyz there
        pages_front=f"{PAGES_FRONT[0]}:{PAGES_FRONT[1]}",
        pages=servers(BACKEND_HTTP_PORT, "check-send-proxy"),
    )  # fmt: skip


# ---- the load ---------------------------------------------------------------------------


@dataclass
class LoadResult:
    sessions: int = 0
    whole: int = 0  # every byte came back
    drained: int = 0  # the server closed early, after echoing exactly a prefix (a drain)
    wrong: int = 0  # a byte came back that was not sent there
    failed: int = 0  # no connection, or reset before any byte
    bytes_verified: int = 0


async def _session(host: str, port: int, payload: bytes, result: LoadResult) -> None:
    result.sessions += 1
    try:
        stream = await trio.open_tcp_stream(host, port)
    except OSError:
        result.failed += 1
        return
    got = bytearray()
    async with stream:

        async def send() -> None:
            try:
                await stream.send_all(payload)
                await stream.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                while data := await stream.receive_some(65536):
                    got += data
        except* trio.BrokenResourceError:
            pass
    if bytes(got) == payload:
        result.whole += 1
    elif payload.startswith(got) and got:
        result.drained += 1
    elif not got:
        result.failed += 1
    else:
        result.wrong += 1
    if payload.startswith(got):
        result.bytes_verified += len(got)


async def load(host: str, port: int, workers: int, seconds: float) -> LoadResult:
    result = LoadResult()
    rng = random.Random(7100)
    payloads = [payload_without_exit(SESSION_BYTES, seed=rng.randrange(1 << 30)) for _ in range(8)]

    async def worker(n: int) -> None:
        deadline = trio.current_time() + seconds
        i = n
        while trio.current_time() < deadline:
            await _session(host, port, payloads[i % len(payloads)], result)
            i += 1

    async with trio.open_nursery() as nursery:
        for n in range(workers):
            nursery.start_soon(worker, n)
    return result


# ---- the cells --------------------------------------------------------------------------


def _events(said: Sequence[str], name: str, start: int = 0) -> list[dict[str, Any]]:
    found = []
    for line in said[start:]:
        if f'"event": "{name}"' in line:
            found.append(json.loads(line))
    return found


async def _until(
    condition: Callable[[], bool], logs: Sequence[lab_network.Started], patience: float
) -> bool:
    """Wait until `condition` holds of the logs, looking again as each new line comes."""
    with trio.move_on_after(patience):
        while not condition():
            async with trio.open_nursery() as nursery:  # the first of them to say more

                async def heard(log: lab_network.Started, nursery: trio.Nursery = nursery) -> None:
                    await log.heard.wait()
                    nursery.cancel_scope.cancel()

                for log in logs:
                    nursery.start_soon(heard, log)
        return True
    return False


async def run_fleet_cells(
    nursery: trio.Nursery, workdir: Any, step: float
) -> list[lab_network.Outcome]:
    config = workdir / "haproxy.cfg"
    config.write_text(haproxy_config())
    backends = []
    for host in BACKENDS:
        argv = [*lab_network.python_in(host), "-m", "trio_echo.server", "--host", "0.0.0.0",
                "--port", str(BACKEND_PORT), "--http", str(BACKEND_HTTP_PORT),
                "--metrics", f"0.0.0.0:{BACKEND_METRICS_PORT}",
                "--proxy-protocol", "--proxy-trusted",
                f"{BALANCER_SOURCE}/32", "--log-format", "json", "--quiet",
                "--shutdown-timeout", "5", "--drain-timeout", "2"]  # fmt: skip
        backends.append(
            lab_network.started(nursery, f"backend on {host}", argv, '"server.listening"')
        )
    haproxy = [
        "ip",
        "netns",
        "exec",
        lab_network.ns("router"),
        "haproxy",
        "-f",
        str(config),
        "-db",
        "-V",
    ]
    async with (
        backends[0] as local,
        backends[1] as vm,
        lab_network.started(nursery, "haproxy", haproxy, "will use epoll") as balancer,
    ):
        both_up = await _both_ready(step)
        spread = await _remote_via_haproxy(local, vm, step, both_up)
        pages = await _websocket_via_haproxy(local, vm, step)
        failover = await _failover(local, vm, balancer, step)
    return [spread, pages, failover]


async def _both_ready(step: float) -> bool:
    """Both backends answer /readyz (what HAProxy checks, every 200 ms) to REMOTE."""
    for address in BACKENDS.values():
        asked = await trio.run_process(
            [*lab_network.python_in("remote"), "-m", "trio_echo.client", "--host", address,
             "--port", str(BACKEND_METRICS_PORT), "--info", "--connect-timeout", str(step)],
            capture_stdout=True, capture_stderr=True, check=False,
        )  # fmt: skip
        if asked.returncode != 0:
            return False
    return True


async def _run_load(workers: int, seconds: float) -> LoadResult:
    done = await trio.run_process(
        [*lab_network.python_in("remote"), "-m", "trio_echo.fleet", "load", FRONT[0], str(FRONT[1]),
         str(workers), str(seconds)],
        capture_stdout=True, capture_stderr=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(done.stderr.decode().strip() or "the load failed")
    return LoadResult(**json.loads(done.stdout))


async def _remote_via_haproxy(
    local: lab_network.Started, vm: lab_network.Started, step: float, both_up: bool
) -> lab_network.Outcome:
    marks = (len(local.said), len(vm.said))
    result = await _run_load(4, 2 * step)
    peers = {
        name: [e for e in _events(b.said, "server.connected", mark) if not e["health_check"]]
        for name, b, mark in (("local", local, marks[0]), ("vm", vm, marks[1]))
    }
    real = all(e["peer"].startswith("198.18.3.2:") for side in peers.values() for e in side)
    via = all(e["via"].startswith(f"{BALANCER_SOURCE}:") for side in peers.values() for e in side)
    met = both_up and all(peers.values()) and real and via and result.whole == result.sessions
    detail = _(
        "{sessions} sessions, {verified:,} bytes verified; local served {local}, vm {vm}; every "
        "backend saw REMOTE's own address (198.18.3.2) via HAProxy ({balancer})"
    ).format(
        sessions=result.sessions, verified=result.bytes_verified, local=len(peers["local"]),
        vm=len(peers["vm"]), balancer=BALANCER_SOURCE,
    )  # fmt: skip
    if not met:
        detail = f"health checks passed: {both_up}; real addresses: {real}; {asdict(result)}"
    path = _("remote -> HAProxy {host}:{port} -> local, vm").format(host=FRONT[0], port=FRONT[1])
    return lab_network.Outcome(
        "REMOTE via HAProxy", path, "pass", met, "PASS" if met else "FAIL", "-", "-", detail
    )


async def _websocket_via_haproxy(
    local: lab_network.Started, vm: lab_network.Started, step: float
) -> lab_network.Outcome:
    """REMOTE's browser-like client (the check and the client, --websocket) through HAProxy
    to the backends' pages port: both reached, both see REMOTE's own address."""
    marks = (len(local.said), len(vm.said))
    host, port = PAGES_FRONT
    python = lab_network.python_in("remote")
    check = await trio.run_process(
        [*python, "-m", "trio_echo.check", host, str(port), "--websocket", "--json",
         "--timeout", str(step), "--lang", "en"],
        capture_stdout=True, capture_stderr=True, check=False,
    )  # fmt: skip
    line = b"hello from remote's browser\nexit\n"
    client = await trio.run_process(
        [*python, "-m", "trio_echo.client", "--host", host, "--port", str(port), "--websocket",
         "--quiet", "--lang", "en"],
        stdin=line, capture_stdout=True, capture_stderr=True, check=False,
    )  # fmt: skip
    peers = {
        name: [e for e in _events(b.said, "server.connected", mark)
               if e["transport"] == "http" and not e["health_check"]]
        for name, b, mark in (("local", local, marks[0]), ("vm", vm, marks[1]))
    }  # fmt: skip
    real = all(e["peer"].startswith("198.18.3.2:") for side in peers.values() for e in side)
    report = json.loads(check.stdout or b"{}")
    met = bool(report.get("ok")) and client.stdout == line and all(peers.values()) and real
    detail = _(
        "the check and the client over WebSocket; local served {local}, vm {vm}, each saw "
        "REMOTE's own address"
    ).format(local=len(peers["local"]), vm=len(peers["vm"]))
    if not met:
        detail = f"check ok: {report.get('ok')}; client: {client.stderr.decode()[-300:]}; {peers}"
    path = _("remote -> HAProxy {host}:{port} -> local, vm").format(host=host, port=port)
    return lab_network.Outcome(
        "REMOTE via HAProxy, WebSocket",
        path,
        "pass",
        met,
        "PASS" if met else "FAIL",
        "-",
        "-",
        detail,
    )


async def _failover(
    local: lab_network.Started, vm: lab_network.Started, balancer: lab_network.Started, step: float
) -> lab_network.Outcome:
    marks = {"local": len(local.said), "vm": len(vm.said)}
    async with trio.open_nursery() as nursery:
        outcome: list[LoadResult] = []

        async def run() -> None:
            outcome.append(await _run_load(8, 4 * step))

        nursery.start_soon(run)
        # Under load: once vm is serving sessions of it, stop vm as systemd or a deploy would.
        loaded = await _until(
            lambda: len(_events(vm.said, "server.connected", marks["vm"])) >= 6, [vm], 10 * step
        )
        stopped_at = trio.current_time()
        vm.process.send_signal(signal.SIGTERM)
        down = await _until(
            lambda: any("vm is DOWN" in line for line in balancer.said), [balancer], 10 * step
        )
        took = trio.current_time() - stopped_at
    result = outcome[0]
    vm_ends = _events(vm.said, "server.disconnected", marks["vm"])
    vm_sessions = [e for e in vm_ends if e["bytes_in"] > 0 and e["reason"] != "reset"]
    lost = [e for e in vm_ends if e["bytes_in"] != e["bytes_out"]]
    moved = sum(
        not e["health_check"] for e in _events(local.said, "server.connected", marks["local"])
    )
    met = loaded and down and result.wrong == 0 and not lost and result.failed == 0
    detail = _(
        "{sessions} sessions, {verified:,} bytes verified, 0 wrong, {failed} failed; vm drained "
        "{drained_sessions} sessions ({cut} cut short, {lost} with a byte lost); HAProxy marked "
        "vm down {took:.2f} s after SIGTERM (vm failing its checks while draining); local took "
        "{moved} sessions"
    ).format(
        sessions=result.sessions, verified=result.bytes_verified, failed=result.failed,
        drained_sessions=len(vm_sessions), cut=result.drained, lost=len(lost), took=took,
        moved=moved,
    )  # fmt: skip
    if not met:
        detail = f"under load: {loaded}; marked down: {down}; lost: {len(lost)}; {asdict(result)}"
    path = _("remote -> HAProxy; vm backend stopped (SIGTERM) under load")
    return lab_network.Outcome(
        "FAILOVER", path, "pass", met, "PASS" if met else "FAIL", "-", "-", detail
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 5 or args[0] != "load":
        sys.exit("usage: python -m trio_echo.fleet load HOST PORT WORKERS SECONDS")
    result = trio.run(load, args[1], int(args[2]), int(args[3]), float(args[4]))
    print(json.dumps(asdict(result)))


if __name__ == "__main__":
    main()
