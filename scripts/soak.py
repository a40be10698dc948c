#!/usr/bin/env python3
"""A bounded soak of a real trio-echo server process: many clients, random sessions, faults.

Each client loops until the deadline, picking a session at random: an echo of random bytes
sent in random pieces with random pauses, then a half-close; an `exit` in a random place;
hostile bytes (escapes, NUL, invalid UTF-8, long lines); a reset in the middle (SO_LINGER 0);
a slow reader; and the same through a fault-injecting proxy that splits, delays, stalls and
resets. Every byte that comes back is checked against the model of the echo contract.

At the end it stops the server with SIGTERM and reads its `disconnected` events: no
connection may have lost a byte it received. It prints connections, bytes verified, errors
by kind, and the server's RSS and open descriptors at the start and at the end, and exits 1
if anything was lost, wrong or leaked.

    python scripts/soak.py --duration 60
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trio_echo.faulty_link import FaultProxy, Faults  # noqa: E402
from trio_echo.protocol import ExitDetector  # noqa: E402

HOSTILE = [
    b"\x1b[2J\x1b[31mred\x1b[0m\n",
    b"\x00\x01\x02\x7f\n",
    b"\xff\xfe\xc3\x28 invalid utf-8\n",
    b"line\rover\rwrite\r\n",
    b"12:00:00.000 STOPPED fake log line\n",
    b"\xe2\x80\xae reversed \xe2\x80\xac\n",
]
LEAK_RSS_BYTES = 16 << 20  # growth over the run above this is a leak (bounded memory claim)


@dataclass
class Tally:
    sessions: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    bytes_verified: int = 0
    failures: list[str] = field(default_factory=list)
    # A chaos run's fault (a worker killed) breaks sessions and refuses connections: then
    # only a wrong byte is a failure; what came back must still be a prefix of the echo.
    breaks_expected: bool = False


def rss_and_fds(pid: int) -> tuple[int, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
    return rss_kib * 1024, len(os.listdir(f"/proc/{pid}/fd"))


def expected_echo(sent: bytes) -> tuple[bytes, bool]:
    """What the server sends back for `sent` followed by end of input, and whether it was
    ended by `exit`."""
    detector = ExitDetector()
    cut = detector.feed(sent)
    if cut is not None:
        return sent[:cut], True
    return sent, detector.end_of_input()


async def read_until_eof(stream: trio.SocketStream, into: bytearray, slow: bool) -> None:
    while data := await stream.receive_some(65536 if not slow else 1024):
        into += data
        if slow:
            await trio.sleep(0.001)


async def echo_session(
    rng: random.Random, port: int, payload: bytes, tally: Tally, kind: str, slow: bool = False
) -> None:
    got = bytearray()
    broken = False
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        async with stream, trio.open_nursery() as nursery:
            nursery.start_soon(read_until_eof, stream, got, slow)
            view = memoryview(payload)
            while view:
                size = rng.randint(1, 8192)
                await stream.send_all(view[:size])
                view = view[size:]
                if rng.random() < 0.05:
                    await trio.sleep(rng.uniform(0, 0.01))
            await stream.send_eof()
    except* (trio.BrokenResourceError, trio.ClosedResourceError):
        broken = True
    want, exited = expected_echo(payload)
    if tally.breaks_expected and (broken or bytes(got) != want):
        # Broken, or closed early by a server going down (a stop echoes what it read).
        tally.errors[f"{kind}: cut short by the fault"] += 1
        if not want.startswith(bytes(got)):
            tally.errors[f"{kind}: WRONG ECHO"] += 1
            tally.failures.append(f"{kind}: what came back before the break differs")
    elif broken and not exited:  # after `exit` the server may close while we still send
        tally.errors[f"{kind}: connection broken"] += 1
        tally.failures.append(f"{kind}: the connection broke")
    elif bytes(got) != want:
        tally.failures.append(f"{kind}: echo of {len(got)} bytes differs from the model")
        tally.errors[f"{kind}: WRONG ECHO"] += 1
    else:
        tally.bytes_verified += len(got)


async def reset_session(rng: random.Random, port: int, tally: Tally) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(rng.randbytes(rng.randint(1, 100_000)))
    stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()
    tally.errors["client reset (injected)"] += 1


async def proxied_session(rng: random.Random, port: int, payload: bytes, tally: Tally) -> None:
    """Through the fault proxy: a reset there is expected; what came back must be a prefix."""
    got = bytearray()
    broken = False
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream, trio.open_nursery() as nursery:
            nursery.start_soon(read_until_eof, stream, got, False)
            await stream.send_all(payload)
            await stream.send_eof()
    except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        broken = True
    want, exited = expected_echo(payload)
    if broken:
        tally.errors["proxy: closed after exit" if exited else "proxy reset (injected)"] += 1
    cut_short = broken or tally.breaks_expected  # a fault may close it early, cleanly
    if not want.startswith(bytes(got)) or (not cut_short and bytes(got) != want):
        tally.errors["proxy: WRONG ECHO"] += 1
        tally.failures.append("proxied echo differs from the model")
    elif not broken:
        tally.bytes_verified += len(got)


def random_payload(rng: random.Random) -> tuple[str, bytes]:
    kind = rng.choice(["echo", "echo", "exit", "hostile", "long line"])
    if kind == "echo":
        return kind, rng.randbytes(rng.randint(0, 300_000)).replace(b"exit", b"EXIT")
    if kind == "exit":
        before = b"".join(rng.choice([b"a\n", b"ex", b"it\n", b" \t", b"\r\n"]) for _ in range(50))
        return kind, before + b"  exit \r\n" + rng.randbytes(rng.randint(0, 50_000))
    if kind == "hostile":
        return kind, b"".join(rng.choice(HOSTILE) for _ in range(rng.randint(1, 200)))
    return kind, b"x" * rng.randint(100_000, 2_000_000)  # no newline at all


async def client_loop(
    worker: int, seed: int, ports: dict[str, int], deadline: float, tally: Tally
) -> None:
    rng = random.Random(seed * 1000 + worker)
    while trio.current_time() < deadline:
        choice = rng.random()
        try:
            if choice < 0.6:
                kind, payload = random_payload(rng)
                await echo_session(rng, ports["server"], payload, tally, kind)
            elif choice < 0.7:
                kind = "slow reader"
                await echo_session(rng, ports["server"], rng.randbytes(500_000), tally, kind, True)
            elif choice < 0.8:
                kind = "reset"
                await reset_session(rng, ports["server"], tally)
            else:
                kind = "through proxy"
                _, payload = random_payload(rng)
                await proxied_session(rng, ports["proxy"], payload[:200_000], tally)
        except (OSError, trio.BrokenResourceError) as exc:
            if not tally.breaks_expected:
                tally.failures.append(f"worker {worker}: {exc}")
            kind = "connect"
            why = "refused by the fault" if tally.breaks_expected else "unexpected"
            tally.errors[f"{why}: {type(exc).__name__}"] += 1
        tally.sessions[kind] += 1


PROGRESS_SECONDS = 10.0


async def report_progress(pid: int, events: list[dict[str, object]], tally: Tally) -> None:
    """A line at least every PROGRESS_SECONDS while the soak runs (it is cancelled with it)."""
    began = trio.current_time()
    while True:
        await trio.sleep(PROGRESS_SECONDS)  # a report's pace, not a synchronisation
        rss, _ = rss_and_fds(pid)
        connections = sum(e["event"] == "server.disconnected" for e in events)
        errors = sum(tally.errors.values())
        print(
            f"  {trio.current_time() - began:6.0f} s: {connections:,} connections, "
            f"{tally.bytes_verified:,} bytes verified, {errors} errors (injected resets "
            f"included), server RSS {rss / 2**20:.1f} MiB",
            flush=True,
        )


async def soak(args: argparse.Namespace) -> int:
    server_argv = [
        sys.executable, "-m", "trio_echo.server", "--port", "0", "--log-format", "json",
        "--quiet", "--max-connections", "10000",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = await trio.lowlevel.open_process(server_argv, stderr=subprocess.PIPE, env=env)
    assert server.stderr is not None
    events: list[dict[str, object]] = []
    stray: list[str] = []
    tally = Tally()
    async with trio.open_nursery() as nursery:
        listening, drained = trio.Event(), trio.Event()
        ports: dict[str, int] = {}
        open_connections = 0
        clients_done = False

        async def read_events() -> None:
            nonlocal open_connections
            assert server.stderr is not None
            buffer = b""
            while chunk := await server.stderr.receive_some(65536):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    try:
                        event = json.loads(line)
                    except ValueError:  # anything but an event on stderr is a fault
                        stray.append(line.decode(errors="replace"))
                        continue
                    events.append(event)
                    if event["event"] == "server.listening":
                        ports["server"] = int(event["port"])
                        listening.set()
                    open_connections += {"server.connected": 1, "server.disconnected": -1}.get(
                        str(event["event"]), 0
                    )
                    if clients_done and open_connections == 0:
                        drained.set()
            drained.set()  # the server's stderr ended: it has exited, nothing more will come

        nursery.start_soon(read_events)
        with trio.fail_after(20):
            await listening.wait()
        faults = Faults(split=512, delay=0.0005, stall=0.001, stall_seconds=0.2, reset=0.0005)
        proxy = FaultProxy("127.0.0.1", ports["server"], faults, seed=args.seed)
        ports["proxy"] = await nursery.start(proxy.run)
        rss_start, fds_start = rss_and_fds(server.pid)
        print(f"soak: {args.clients} clients for {args.duration:g} s against pid {server.pid}")
        deadline = trio.current_time() + args.duration
        with trio.fail_after(args.duration + 120):  # bounded, whatever happens
            async with trio.open_nursery() as clients:
                for worker in range(args.clients):
                    clients.start_soon(client_loop, worker, args.seed, ports, deadline, tally)
                nursery.start_soon(report_progress, server.pid, events, tally)
            # Every client is gone: once the server has logged every disconnect, it must be
            # back where it started.
            clients_done = True
            if open_connections == 0:
                drained.set()
            await drained.wait()
        crashed = server.poll() is not None
        rss_end, fds_end = (0, 0) if crashed else rss_and_fds(server.pid)
        if not crashed:
            server.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            status = await server.wait()
        nursery.cancel_scope.cancel()

    ends = [e for e in events if e["event"] == "server.disconnected"]
    reasons = Counter(str(e["reason"]) for e in ends)
    lost = [
        e for e in ends if e["reason"] in ("eof", "shutdown") and e["bytes_in"] != e["bytes_out"]
    ]
    stopped = [e for e in events if e["event"] == "server.stopped"]
    print(f"connections: {len(ends)} (by reason: {dict(sorted(reasons.items()))})")
    print(f"sessions: {dict(sorted(tally.sessions.items()))}")
    print(f"bytes verified byte-exact by clients: {tally.bytes_verified:,}")
    print(f"errors by kind: {dict(sorted(tally.errors.items())) or 'none'}")
    print(f"proxy faults: {proxy.counts}")
    print(f"server RSS: {rss_start / 2**20:.1f} MiB at start, {rss_end / 2**20:.1f} MiB at end")
    print(f"server open descriptors: {fds_start} at start, {fds_end} at end")
    print(f"connections that lost a received byte: {len(lost)}")
    print(f"server exit status: {status}; stopped event: {'yes' if stopped else 'NO'}")
    problems = list(tally.failures[:5])
    if lost:
        problems.append(f"{len(lost)} connections lost bytes: {lost[:3]}")
    if rss_end - rss_start > LEAK_RSS_BYTES:
        problems.append(f"RSS grew by {(rss_end - rss_start) / 2**20:.1f} MiB")
    if fds_end != fds_start:
        problems.append(f"descriptors: {fds_start} -> {fds_end}")
    if status != 0 or not stopped:
        problems.append("the server did not stop cleanly")
    if stray:
        problems.append(f"{len(stray)} lines on the server's stderr that are not events:")
        problems.extend(stray[:40])
    for problem in problems:
        print(f"FAIL: {problem}")
    print("soak: PASS" if not problems else "soak: FAIL")
    return 0 if not problems else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients")
    parser.add_argument("--seed", type=int, default=862)
    sys.exit(trio.run(soak, parser.parse_args()))


if __name__ == "__main__":
    main()
