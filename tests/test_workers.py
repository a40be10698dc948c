"""`--workers N`: one port, N processes, one event stream, stopped together, no orphans."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess

import trio

from tests.conftest import require_tool
from tests.processes import PATIENCE, SERVER, reading, server_process


async def exited(pid: int) -> None:
    """Wait until a process that is not our child has gone (a pidfd turns readable)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        with trio.fail_after(PATIENCE):
            await trio.lowlevel.wait_readable(pidfd)
    finally:
        os.close(pidfd)


async def echo_once(port: int, message: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(message)
        await stream.send_eof()
        got = b""
        while data := await stream.receive_some(65536):
            got += data
    return got


def records(lines: list[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in lines]


async def test_two_workers_share_the_port_name_themselves_and_stop_together() -> None:
    async with server_process("--workers", "2") as server:
        second = await server.log.until('"server.listening"')
        assert json.loads(second)["port"] == server.port
        messages = [f"hello {n}\n".encode() * (n + 1) for n in range(40)]
        echoes: dict[int, bytes] = {}

        async def one(n: int) -> None:
            echoes[n] = await echo_once(server.port, messages[n])

        async with trio.open_nursery() as nursery:
            for n in range(len(messages)):
                nursery.start_soon(one, n)
        assert [echoes[n] for n in range(len(messages))] == messages
        for _ in messages:
            await server.log.until('"server.disconnected"')
        server.process.send_signal(signal.SIGTERM)
        lines = await server.log.rest()
        assert await server.process.wait() == 0
    events = records(lines)
    assert all(event["worker"] in (1, 2) for event in events)
    pids = {e["worker"]: int(str(e["pid"])) for e in events if e["event"] == "server.starting"}
    assert set(pids) == {1, 2}
    assert len(set(pids.values())) == 2
    served = {
        w: sum(e["event"] == "server.connected" and e["worker"] == w for e in events) for w in pids
    }
    # 40 connections spread by the kernel's hash: both workers get some (all on one worker
    # would happen with probability 2**-39).
    assert served[1] + served[2] == len(messages)
    assert min(served.values()) > 0
    for worker in pids:
        stops = [e for e in events if e["worker"] == worker and e["event"] == "server.stopping"]
        assert [stop["reason"] for stop in stops] == ["SIGTERM"]
    for pid in pids.values():
        await exited(pid)  # returns at once: the supervisor waited for them


async def test_workers_stop_by_themselves_when_the_supervisor_is_killed() -> None:
    async with server_process("--workers", "2") as server:
        await server.log.until('"server.listening"')
        starts = [json.loads(line) for line in server.log.seen if '"server.starting"' in line]
        pids = [int(start["pid"]) for start in starts]
        assert len(pids) == 2
        server.process.kill()  # SIGKILL: nothing forwarded, nothing cleaned up
        await server.process.wait()
        for pid in pids:
            await exited(pid)  # each saw its stdin pipe end, and stopped


async def test_a_worker_that_dies_stops_the_others_and_fails_the_server() -> None:
    async with server_process("--workers", "2") as server:
        await server.log.until('"server.listening"')
        starts = [json.loads(line) for line in server.log.seen if '"server.starting"' in line]
        victim = next(start for start in starts if start["worker"] == 2)
        os.kill(int(victim["pid"]), signal.SIGKILL)
        lines = await server.log.rest()
        assert await server.process.wait() == 1
    text = "\n".join(lines)
    assert f"trio-echo-server: error: worker 2 (pid {victim['pid']}) was killed by SIGKILL" in text
    assert "Traceback" not in text
    survivor = [e for e in records(lines[:-1]) if e["worker"] == 1]
    assert [e["event"] for e in survivor][-2:] == ["server.stopping", "server.stopped"]


async def test_a_second_stop_signal_while_the_workers_exit_is_a_clean_stop() -> None:
    """A second SIGTERM that the supervisor forwards while a worker is exiting (systemd's
    default KillMode signals every process of the service at once; a person presses Ctrl-C
    twice) came where Python had put the default handler back: the worker died by SIGTERM
    and the server failed (8 runs in 10, with the two signals 1-9 ms apart, before the
    fix). Once the server has stopped, stop signals are ignored."""
    for _ in range(3):
        async with server_process("--workers", "2") as server:
            await server.log.until('"server.listening"')
            server.process.send_signal(signal.SIGTERM)
            await server.log.until('"server.stopped"')
            await server.log.until('"server.stopped"')
            server.process.send_signal(signal.SIGTERM)
            lines = await server.log.rest()
            assert await server.process.wait() == 0, lines[-1:]


async def test_a_port_taken_by_another_program_is_one_line_and_status_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = await trio.run_process(
            [*SERVER, "--workers", "2", "--port", str(port)], capture_stderr=True, check=False
        )
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        f"trio-echo-server: error: cannot listen on 127.0.0.1:{port}: address already in use"
    ]


async def test_a_second_fleet_on_a_taken_port_is_refused_not_given_half_the_clients() -> None:
    """Two `--workers` fleets of one user could both bind with SO_REUSEPORT, and the kernel
    split the clients between them (issue 24, 11). A second one is refused as a single
    server would be."""
    async with server_process("--workers", "2") as first:
        with trio.fail_after(PATIENCE):
            second = await trio.run_process(
                [*SERVER, "--workers", "2", "--port", str(first.port)],
                capture_stderr=True,
                check=False,
            )
    assert second.returncode == 1
    assert second.stderr.decode().splitlines() == [
        f"trio-echo-server: error: cannot listen on 127.0.0.1:{first.port}: address already in use"
    ]


async def test_a_supervisor_whose_stderr_nobody_reads_still_stops() -> None:
    """Its copy of the workers' logs blocked in a write to a full pipe, and the supervisor
    stayed there through SIGTERM and SIGINT while the workers exited (issue 24, 9). Now the
    copy is given FINAL_FLUSH_SECONDS once every worker has exited, then let go."""
    supervisor = await trio.lowlevel.open_process(
        [*SERVER, "--workers", "2", "--port", "0", "--log-format", "json"],
        stderr=subprocess.PIPE,
    )
    try:
        assert supervisor.stderr is not None
        said = b""
        with trio.fail_after(PATIENCE):
            while not (found := [line for line in said.split(b"\n")[:-1] if b"listening" in line]):
                said += await supervisor.stderr.receive_some(65536)
        port = int(json.loads(found[0])["port"])
        # From here on nobody reads the supervisor's stderr.
        lines = b"".join(b"%d line to log\n" % i for i in range(200))
        for _ in range(40):  # far more events than a pipe holds
            async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
                await stream.send_all(lines)
                await stream.send_eof()
                while await stream.receive_some(65536):
                    pass
        supervisor.send_signal(signal.SIGTERM)
        with trio.fail_after(4 * PATIENCE):
            status = await supervisor.wait()
        assert status == 0
    finally:
        if supervisor.returncode is None:
            supervisor.kill()
        await supervisor.wait()


async def test_a_supervisor_whose_stderr_is_closed_serves_on_and_stops_cleanly() -> None:
    """The reader of the log went away (a pipe into a program that exited): the supervisor's
    copy of its workers' lines met EPIPE, which ended the supervisor and, with it, every
    worker and connection (the chaos run found it). Now the lines are dropped, as a single
    server drops its own, and the fleet serves on."""
    process = await trio.lowlevel.open_process(
        [*SERVER, "--port", "0", "--workers", "2", "--log-format", "json"],
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        async with reading(process.stderr) as log:
            port = int(json.loads(await log.until('"server.listening"'))["port"])
            await log.until('"server.listening"')
        await process.stderr.aclose()
        for n in range(20):  # every one of them makes both workers log a few lines
            message = f"still here {n}\n".encode()
            assert await echo_once(port, message) == message
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(PATIENCE):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def test_more_workers_than_usable_cores_is_said_first() -> None:
    """`--workers 3` on 2 cores started without a word (issue 24, 15): the cores counted are
    those this process may run on (here one, by `taskset`)."""
    taskset = require_tool("taskset")
    command = [taskset, "-c", "0", *SERVER, "--workers", "2", "--port", "0"]
    process = await trio.lowlevel.open_process(
        [*command, "--log-format", "json"], stderr=subprocess.PIPE
    )
    try:
        assert process.stderr is not None
        async with reading(process.stderr) as log:
            await log.until('"server.listening"')
            process.send_signal(signal.SIGINT)
            lines = await log.rest()
        assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
    first = json.loads(lines[0])
    assert (first["event"], first["workers"], first["cores"]) == ("server.workers_warning", 2, 1)
