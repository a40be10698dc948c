#!/usr/bin/env python3
"""The chaos run of the soak: the soak's clients against a real server while something
breaks under it, one fault a scenario, each with its bound and its verdict.

    stop-worker       --workers 2: a worker SIGSTOPped under load, then SIGCONTed
    kill-worker       --workers 2: a worker SIGKILLed under load
    log-closed        the server's stderr closed by its reader under load
    log-closed-fleet  the same with --workers 2 (the supervisor's stderr)
    fd-exhaustion     --tls with 64 descriptors, held by connections that owe a handshake,
                      while TLS clients keep coming
    keyupdate-flood   TLS 1.3 KeyUpdates never read (scripts/bench/tls_load.c) beside
                      TLS clients

The verdicts come from the server's own events (a JSON copy of every event,
TRIO_ECHO_EVENT_COPY, which outlives a closed stderr) and from the clients, which check every
byte: bytes lost (connections ended by end of input or a stop with bytes in != bytes out;
must be 0), connections that never ended (but those of a worker killed on purpose, counted
as cut), wrong echoes, RSS and descriptors of every server process before and after, the
exit status. It prints a table and exits 1 if any verdict fails.

    python scripts/chaos.py --duration 20
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import trio
from soak import ROOT, Tally, client_loop, rss_and_fds

TLS_LOAD_SOURCE = ROOT / "scripts" / "bench" / "tls_load.c"
BUILD = Path(tempfile.gettempdir()) / f"trio-echo-chaos-{os.getuid()}"
DESCRIPTOR_LIMIT = 64  # fd-exhaustion: the server's hard and soft limit
HOLDERS = 80  # fd-exhaustion: connections that never start their handshake
GRACE = 30.0  # seconds past the load for the server to end every connection and stop


@dataclass
class Fleet:
    """A server process we started (a supervisor with --workers), and what it logged."""

    process: trio.Process
    port: int
    pids: dict[int, int]  # worker (0: a single server) -> pid
    copy: Path

    def events(self) -> list[dict[str, object]]:
        with self.copy.open(encoding="utf-8") as lines:
            return [json.loads(line) for line in lines]

    def usage(self) -> dict[int, tuple[int, int]]:
        """RSS and open descriptors of each process still running."""
        found = {}
        for pid in [self.process.pid, *self.pids.values()]:
            with suppress(FileNotFoundError, ProcessLookupError, StopIteration):  # gone, a zombie
                found[pid] = rss_and_fds(pid)
        return found


@dataclass
class Verdict:
    scenario: str
    fault: str
    status: int | None = None
    expected_status: int = 0
    lost: int = 0
    unended: int = 0
    cut: int = 0
    wrong: int = 0
    served: int = 0
    before: dict[int, tuple[int, int]] = field(default_factory=dict)
    after: dict[int, tuple[int, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # the clients' own words
    killed: set[int] = field(default_factory=set)  # pids killed on purpose
    problems: list[str] = field(default_factory=list)

    def judge(self, events: list[dict[str, object]], killed: frozenset[int] = frozenset()) -> None:
        """Bytes lost and connections left open, from the server's own events."""
        ends = [e for e in events if e["event"] == "server.disconnected"]
        self.served = len(ends)
        self.lost = sum(
            e["reason"] in ("eof", "shutdown") and e["bytes_in"] != e["bytes_out"] for e in ends
        )
        opened = Counter(e.get("worker", 0) for e in events if e["event"] == "server.connected")
        closed = Counter(e.get("worker", 0) for e in ends)
        for worker, count in opened.items():
            if worker in killed:
                self.cut += count - closed[worker]
            else:
                self.unended += count - closed[worker]
        if self.lost:
            self.problems.append(f"{self.lost} connections lost bytes they had received")
        if self.unended:
            self.problems.append(f"{self.unended} connections never ended")
        if self.wrong:
            self.problems.append(f"{self.wrong} wrong echoes")
        if self.status != self.expected_status:
            self.problems.append(f"exit status {self.status}, not {self.expected_status}")
        for pid, (rss, fds) in self.after.items():
            rss0, fds0 = self.before.get(pid, (rss, fds))
            if rss - rss0 > 16 << 20:
                self.problems.append(f"pid {pid}: RSS grew by {(rss - rss0) >> 20} MiB")
            if fds != fds0:
                self.problems.append(f"pid {pid}: descriptors {fds0} -> {fds}")


# ---- the server and its events ----------------------------------------------------------------


@asynccontextmanager
async def fleet(
    *options: str, workers: int = 1, preexec: Callable[[], None] | None = None
) -> AsyncIterator[tuple[Fleet, trio.CancelScope]]:
    """A server with `options`, yielded once every worker listens, with the scope of the task
    that reads its stderr (cancel it to stop reading). Killed at the end if still running."""
    copy_dir = Path(tempfile.mkdtemp(prefix="trio-echo-chaos-"))
    copy = copy_dir / "events.jsonl"
    copy.touch()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRIO_ECHO_EVENT_COPY": str(copy)}
    argv = [sys.executable, "-m", "trio_echo.server", "--port", "0", "--log-format", "json",
            "--quiet", "--workers", str(workers), *options]  # fmt: skip
    process = await trio.lowlevel.open_process(
        argv, stderr=subprocess.PIPE, env=env, preexec_fn=preexec
    )
    try:
        assert process.stderr is not None
        pids: dict[int, int] = {}
        listening: list[int] = []
        buffer = b""
        with trio.fail_after(30):
            while len(listening) < workers:
                chunk = await process.stderr.receive_some(65536)
                if not chunk:
                    raise RuntimeError(f"the server exited first: {buffer[-500:]!r}")
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in map(json.loads, lines):
                    if line["event"] == "server.starting":
                        pids[int(line.get("worker", 0))] = int(line["pid"])
                    elif line["event"] == "server.listening":
                        listening.append(int(line["port"]))
        async with trio.open_nursery() as nursery:
            reading = trio.CancelScope()

            async def drain() -> None:
                assert process.stderr is not None
                with reading, suppress(trio.ClosedResourceError):  # we closed it: a fault
                    while await process.stderr.receive_some(65536):
                        pass

            nursery.start_soon(drain)
            yield Fleet(process, listening[0], pids, copy), reading
            reading.cancel()
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()
            shutil.rmtree(copy_dir, ignore_errors=True)


async def stop(server: Fleet, verdict: Verdict) -> None:
    """Measure, then SIGTERM the server and wait for it, within the bound."""
    verdict.after = server.usage()
    if server.process.returncode is None:
        server.process.send_signal(signal.SIGTERM)
    with trio.fail_after(GRACE):
        verdict.status = await server.process.wait()


async def settle(server: Fleet) -> None:
    """Until the server has logged an end for every connection it logged (its events are
    written every few milliseconds: this polls the copy, a report's pace, for at most
    GRACE seconds), so that `after` is measured with no client left."""
    with trio.move_on_after(GRACE):
        while True:
            events = server.events()
            opened = sum(e["event"] == "server.connected" for e in events)
            if opened == sum(e["event"] == "server.disconnected" for e in events):
                return
            await trio.sleep(0.1)


# ---- load -------------------------------------------------------------------------------------


async def soak_load(port: int, clients: int, seconds: float, seed: int, tally: Tally) -> None:
    """The soak's client mix (no faulty link: `through proxy` goes straight to the server)."""
    deadline = trio.current_time() + seconds
    ports = {"server": port, "proxy": port}
    async with trio.open_nursery() as nursery:
        for worker in range(clients):
            nursery.start_soon(client_loop, worker, seed, ports, deadline, tally)


def insecure() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the ephemeral certificate: this checks bytes, not trust
    return context


async def tls_sessions(port: int, seconds: float, rng: random.Random, tally: Tally) -> None:
    """TLS sessions one after another until the deadline: random bytes, then `exit`; the echo
    checked byte for byte."""
    deadline = trio.current_time() + seconds
    context = insecure()
    while trio.current_time() < deadline:
        payload = rng.randbytes(rng.randint(1, 65536)).replace(b"exit", b"EXIT") + b"\nexit\n"
        got = bytearray()
        try:
            with trio.fail_after(GRACE):
                stream = await trio.open_ssl_over_tcp_stream("127.0.0.1", port, ssl_context=context)
                async with stream:
                    await stream.send_all(payload)
                    while data := await stream.receive_some(65536):
                        got += data
        except (OSError, trio.BrokenResourceError, trio.TooSlowError) as exc:
            tally.errors[f"tls: {type(exc).__name__}"] += 1
            tally.failures.append(f"a TLS session failed: {exc!r}")
            continue
        if bytes(got) != payload:
            tally.errors["tls: WRONG ECHO"] += 1
            tally.failures.append("a TLS echo differs")
        else:
            tally.bytes_verified += len(got)
        tally.sessions["tls"] += 1


# ---- the scenarios ----------------------------------------------------------------------------


Fault = Callable[[Fleet, trio.CancelScope], Awaitable[None]]


async def soak_with_fault(
    args: argparse.Namespace, verdict: Verdict, fault: Fault, *, workers: int, at: float
) -> Verdict:
    """The soak's load on a fleet, `fault` at `at` of the run, then the verdict. A fault
    that takes the server down (it exits) ends the load there."""
    tally = Tally(breaks_expected=verdict.expected_status != 0)
    async with fleet(workers=workers) as (server, reading):
        verdict.before = server.usage()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                soak_load, server.port, args.clients, args.duration, args.seed, tally
            )
            await trio.sleep(args.duration * at)  # the fault's moment, not a synchronisation
            await fault(server, reading)
            if server.process.returncode is not None:
                nursery.cancel_scope.cancel()
        if server.process.returncode is None:
            await settle(server)
            await stop(server, verdict)
        else:
            verdict.status = server.process.returncode
        verdict.wrong, verdict.failures = len(tally.failures), tally.failures
        events = server.events()
    killed = frozenset(w for w, pid in server.pids.items() if pid in verdict.killed)
    verdict.judge(events, killed)
    if (
        verdict.expected_status == 0
        and sum(e["event"] == "server.stopped" for e in events) != workers
    ):
        verdict.problems.append(f"not every one of the {workers} workers logged its stop")
    alive = [pid for pid in server.pids.values() if _alive(pid)]
    if alive:
        verdict.problems.append(f"workers still running: {alive}")
    by_fault = sum(n for kind, n in tally.errors.items() if "by the fault" in kind)
    verdict.notes.append(
        f"{tally.bytes_verified:,} bytes verified by the clients; "
        f"{tally.errors['client reset (injected)']} client resets (the soak's own); "
        f"{by_fault} sessions cut short or refused by the fault"
    )
    return verdict


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def stop_worker(args: argparse.Namespace) -> Verdict:
    hold = min(2.0, args.duration / 4)

    async def fault(server: Fleet, _reading: trio.CancelScope) -> None:
        os.kill(server.pids[1], signal.SIGSTOP)
        await trio.sleep(hold)
        os.kill(server.pids[1], signal.SIGCONT)

    verdict = Verdict("stop-worker", f"--workers 2; worker 1 SIGSTOPped for {hold:g} s")
    return await soak_with_fault(args, verdict, fault, workers=2, at=1 / 3)


async def kill_worker(args: argparse.Namespace) -> Verdict:
    async def fault(server: Fleet, _reading: trio.CancelScope) -> None:
        os.kill(server.pids[2], signal.SIGKILL)
        verdict.killed.add(server.pids[2])
        # The supervisor stops the other worker and fails: the clients have no server left.
        with trio.fail_after(GRACE):
            await server.process.wait()

    verdict = Verdict("kill-worker", "--workers 2; worker 2 SIGKILLed", expected_status=1)
    return await soak_with_fault(args, verdict, fault, workers=2, at=1 / 2)


async def log_closed(args: argparse.Namespace, workers: int) -> Verdict:
    async def fault(server: Fleet, reading: trio.CancelScope) -> None:
        reading.cancel()
        assert server.process.stderr is not None
        await server.process.stderr.aclose()

    name = "log-closed" if workers == 1 else "log-closed-fleet"
    verdict = Verdict(name, f"--workers {workers}; stderr closed by its reader under load")
    return await soak_with_fault(args, verdict, fault, workers=workers, at=1 / 3)


def few_descriptors() -> None:  # in the server's process, before it runs
    resource.setrlimit(resource.RLIMIT_NOFILE, (DESCRIPTOR_LIMIT, DESCRIPTOR_LIMIT))


async def hold_descriptors(port: int, seconds: float, opened: list[int]) -> None:
    """Connect and send nothing (a handshake owed) until the server hangs up; again."""
    deadline = trio.current_time() + seconds
    while trio.current_time() < deadline:
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        except OSError:
            continue
        opened[0] += 1
        async with stream:
            with suppress(trio.BrokenResourceError):
                await stream.receive_some(1)


async def fd_exhaustion(args: argparse.Namespace) -> Verdict:
    verdict = Verdict(
        "fd-exhaustion",
        f"--tls, {DESCRIPTOR_LIMIT} descriptors; {HOLDERS} connections owing a handshake",
    )
    tally = Tally()
    opened = [0]
    options = ("--tls", "--tls-handshake-timeout", "1", "--max-connections", "1000")
    async with fleet(*options, preexec=few_descriptors) as (server, _reading):
        verdict.before = server.usage()
        async with trio.open_nursery() as nursery:
            for _ in range(HOLDERS):
                nursery.start_soon(hold_descriptors, server.port, args.duration, opened)
            for n in range(4):
                rng = random.Random(args.seed * 10 + n)
                nursery.start_soon(tls_sessions, server.port, args.duration, rng, tally)
        await settle(server)
        await stop(server, verdict)
        verdict.wrong, verdict.failures = len(tally.failures), tally.failures
        events = server.events()
        verdict.judge(events)
    paused = sum(e["event"] == "server.accept_paused" for e in events)
    resumed = sum(e["event"] == "server.accept_resumed" for e in events)
    if not paused or paused != resumed:
        verdict.problems.append(f"accepting paused {paused} times, resumed {resumed}")
    verdict.notes.append(
        f"{tally.sessions['tls']} TLS sessions exact beside {opened[0]} handshakes owed; "
        f"accepting paused and resumed {paused} times"
    )
    return verdict


def build_tls_load() -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None or not Path("/usr/include/openssl/ssl.h").exists():
        sys.exit("chaos.py: error: keyupdate-flood needs cc and OpenSSL's headers (libssl-dev)")
    BUILD.mkdir(exist_ok=True)
    binary = BUILD / "tls_load"
    subprocess.run(
        [cc, "-O2", "-o", str(binary), str(TLS_LOAD_SOURCE), "-lssl", "-lcrypto", "-lpthread"],
        check=True,
    )
    return binary


async def keyupdate_flood(args: argparse.Namespace) -> Verdict:
    verdict = Verdict("keyupdate-flood", "--tls --idle-timeout 2; KeyUpdates never read")
    tally = Tally()
    tls_load = build_tls_load()
    floods: list[dict[str, object]] = []
    peak = [0]
    async with fleet("--tls", "--idle-timeout", "2") as (server, _reading):
        verdict.before = server.usage()

        async def flood(data: int) -> None:
            command = [str(tls_load), "keyupdate", "127.0.0.1", str(server.port),
                       str(args.duration), str(data)]  # fmt: skip
            done = await trio.run_process(command, capture_stdout=True, capture_stderr=True)
            floods.append(json.loads(done.stdout))

        async def watch_rss() -> None:
            while True:
                peak[0] = max(peak[0], rss_and_fds(server.process.pid)[0])
                await trio.sleep(0.05)  # a measurement's pace

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_rss)
            async with trio.open_nursery() as work:
                for n in range(2):
                    rng = random.Random(args.seed * 10 + n)
                    work.start_soon(tls_sessions, server.port, args.duration, rng, tally)
                for data in (0, 1, 0, 1):
                    await flood(data)
            nursery.cancel_scope.cancel()
        await settle(server)
        await stop(server, verdict)
        verdict.wrong, verdict.failures = len(tally.failures), tally.failures
        events = server.events()
        verdict.judge(events)
    unended = [f for f in floods if f["ended"] != "server"]
    if unended:
        verdict.problems.append(f"{len(unended)} floods not ended by the server")
    rss0 = verdict.before[server.process.pid][0]
    stalled = Counter(
        str((e["detail"] or {}).get("code")) if isinstance(e["detail"], dict) else "none"
        for e in events
        if e["event"] == "server.disconnected" and e["reason"] == "stalled"
    )
    verdict.notes.append(
        f"4 floods, {sum(int(str(f['key_updates'])) for f in floods):,} KeyUpdates, each ended "
        f"by the server in {max(float(str(f['seconds'])) for f in floods):.1f} s at most "
        f"(stalled: {dict(stalled)}); RSS peak +{(peak[0] - rss0) / 2**20:.1f} MiB; "
        f"{tally.sessions['tls']} TLS sessions exact beside them"
    )
    if peak[0] - rss0 > 16 << 20:
        verdict.problems.append(f"RSS peak {(peak[0] - rss0) >> 20} MiB over the start")
    return verdict


SCENARIOS: dict[str, Callable[[argparse.Namespace], Awaitable[Verdict]]] = {
    "stop-worker": stop_worker,
    "kill-worker": kill_worker,
    "log-closed": lambda args: log_closed(args, 1),
    "log-closed-fleet": lambda args: log_closed(args, 2),
    "fd-exhaustion": fd_exhaustion,
    "keyupdate-flood": keyupdate_flood,
}


def report(verdict: Verdict) -> None:
    def usage(which: dict[int, tuple[int, int]]) -> str:
        return ", ".join(f"{rss / 2**20:.1f} MiB/{fds} fds" for rss, fds in which.values())

    ok = "PASS" if not verdict.problems else "FAIL"
    print(f"{verdict.scenario}: {ok} ({verdict.fault})")
    print(
        f"  connections {verdict.served:,}; bytes lost in {verdict.lost}; never ended "
        f"{verdict.unended}; cut by the fault {verdict.cut}; wrong echoes {verdict.wrong}; "
        f"exit status {verdict.status}"
    )
    print(f"  before: {usage(verdict.before)}; after: {usage(verdict.after) or 'exited'}")
    for note in verdict.notes:
        print(f"  {note}")
    for problem in verdict.problems:
        print(f"  FAIL: {problem}")
    for failure in verdict.failures[:5]:
        print(f"  client: {failure}")


async def chaos(args: argparse.Namespace) -> int:
    failed = 0
    for name in args.only or list(SCENARIOS):
        with trio.fail_after(args.duration + 4 * GRACE):  # bounded, whatever happens
            verdict = await SCENARIOS[name](args)
        report(verdict)
        failed += bool(verdict.problems)
    print("chaos: PASS" if not failed else f"chaos: FAIL ({failed} scenarios)")
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load each")
    parser.add_argument("--clients", type=int, default=20, help="concurrent soak clients")
    parser.add_argument("--seed", type=int, default=862)
    parser.add_argument("--only", nargs="+", choices=list(SCENARIOS), help="these scenarios")
    sys.exit(trio.run(chaos, parser.parse_args()))


if __name__ == "__main__":
    main()
