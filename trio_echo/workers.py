"""`--workers N`: N server processes sharing one port, started and stopped as one server.

Python runs one thread of Python at a time, so one process uses one core. With
`SO_REUSEPORT` each worker binds the same port and the kernel spreads new connections over
them. This supervisor is the one process a user sees:

- it picks the port (for `--port 0`, by binding a socket that never listens: it holds the
  port for the workers without ever receiving a connection) and starts the workers, each in
  a session of its own, so that a Ctrl-C in the terminal reaches the supervisor alone;
- it forwards SIGINT and SIGTERM to every worker, once per signal received (the second one
  stops them at once, as it does a single server);
- it copies the workers' event lines, whole lines only, into its own stderr: one stream in
  which every line names its worker;
- if a worker dies on its own, it stops the others and exits with an error; if the supervisor
  itself is killed, each worker sees its stdin (a pipe from the supervisor) end and stops.
  No worker outlives it.
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence

import trio

from trio_echo import capabilities, cli
from trio_echo.eventlog import FINAL_FLUSH_SECONDS, write_all
from trio_echo.events import WorkersWarning
from trio_echo.i18n import _

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def reserve_port(host: str, port: int) -> socket.socket:
    """A bound, never listening, SO_REUSEPORT socket that holds `port` (0: a free one).
    Raises OSError (EADDRINUSE) if anyone listens there already, even with SO_REUSEPORT (a
    second fleet of the same user would otherwise take a share of the first's clients)."""
    family, kind, proto, _name, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    if port != 0:
        # Without SO_REUSEPORT, a bind fails where any socket holds the port; SO_REUSEADDR
        # only lets it past connections of an earlier run still in TIME_WAIT.
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    holder = socket.socket(family, kind, proto)
    try:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(address)
    except OSError:
        holder.close()
        raise
    return holder


async def copy_lines(source: trio.abc.ReceiveStream, lock: trio.Lock) -> None:
    """Copy a worker's stderr to ours, whole lines at a time, so workers never interleave.

    The copy waits for our stderr (in a thread): a slow terminal slows the copy, the
    worker's pipe fills, and the worker's own bounded log starts leaving out data events.
    Once our stderr is gone (its reader closed it: EPIPE), the worker's lines are still
    read, and dropped, as a single server drops its own: the log is no reason to stop.
    """
    partial = b""
    writing = True
    while chunk := await source.receive_some(65536):
        lines, _newline, partial = (partial + chunk).rpartition(b"\n")
        if lines and writing:
            async with lock:
                writing = await _write(lines + b"\n")
    if partial and writing:
        async with lock:
            await _write(partial + b"\n")


async def _write(data: bytes) -> bool:
    """Write to our stderr; False if it is gone."""
    try:
        # Abandoned on cancel: a write stuck on a stalled stderr must not hold up the exit.
        await trio.to_thread.run_sync(write_all, 2, data, abandon_on_cancel=True)
    except OSError:
        return False
    return True


async def forward_signals(signals: AsyncIterator[int], workers: Sequence[trio.Process]) -> None:
    async for signum in signals:
        for worker in workers:
            if worker.returncode is None:
                worker.send_signal(signum)


async def supervise(
    args: argparse.Namespace, argv: Sequence[str], early: Sequence[int] = ()
) -> int:
    """Run `args.workers` servers on one port until they have all stopped; their status.
    `early`: stop signals that came before we could take them, handed to every worker."""
    try:
        holder = reserve_port(args.host, args.port)
    except OSError as exc:
        where = f"{args.host}:{args.port}"
        raise cli.Fatal(
            _("cannot listen on {where}: {error}").format(where=where, error=cli.os_error_text(exc))
        ) from None
    port = holder.getsockname()[1]
    cores = capabilities.usable_cores()
    if args.workers > cores:
        async with cli.open_log(args) as log:  # before the workers' own lines
            log.emit(WorkersWarning(workers=args.workers, cores=cores))
    workers: list[trio.Process] = []
    failures: list[str] = []
    with holder, trio.open_signal_receiver(*SIGNALS) as signals:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(forward_signals, signals, workers)
                await _run_workers(args, argv, port, workers, failures, early)
                nursery.cancel_scope.cancel()  # every worker has exited: nothing to forward
        finally:
            with trio.CancelScope(shield=True):
                for worker in workers:  # only if we got here by an error of our own
                    if worker.returncode is None:
                        worker.kill()
                    await worker.wait()
                    if worker.stdin is not None:
                        await worker.stdin.aclose()
    if failures:
        raise cli.Fatal("; ".join(failures))
    return 0


async def _run_workers(
    args: argparse.Namespace,
    argv: Sequence[str],
    port: int,
    workers: list[trio.Process],
    failures: list[str],
    early: Sequence[int],
) -> None:
    """Start the workers, copy their logs, and return once every one has exited and its log
    is copied, or FINAL_FLUSH_SECONDS after that if our stderr does not take it (a pipe
    nobody reads must not keep the supervisor from exiting)."""
    lock = trio.Lock()
    with trio.CancelScope() as copying:
        async with trio.open_nursery() as copies:
            for worker_id in range(1, args.workers + 1):
                command = [sys.executable, "-m", "trio_echo.server", *argv,
                           "--port", str(port), "--workers", "1",
                           "--worker-id", str(worker_id)]  # fmt: skip
                worker = await trio.lowlevel.open_process(
                    command,
                    stdin=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    start_new_session=True,
                )
                workers.append(worker)
                assert worker.stderr is not None
                copies.start_soon(copy_lines, worker.stderr, lock)
            for signum in early:  # each worker takes them as it comes up (its __main__)
                for worker in workers:
                    worker.send_signal(signum)
            async with trio.open_nursery() as waiting:
                for worker_id, worker in enumerate(workers, start=1):
                    waiting.start_soon(_watch, worker_id, worker, workers, failures)
            copying.deadline = trio.current_time() + FINAL_FLUSH_SECONDS


async def _watch(
    worker_id: int, worker: trio.Process, workers: Sequence[trio.Process], failures: list[str]
) -> None:
    """Wait for one worker; if it failed, say so and stop the others."""
    status = await worker.wait()
    if status == 0:
        return
    failures.append(
        _("worker {worker} (pid {pid}) {status}").format(
            worker=worker_id, pid=worker.pid, status=_status_text(status)
        )
    )
    for other in workers:
        if other.returncode is None:
            other.send_signal(signal.SIGTERM)


def _status_text(status: int) -> str:
    if status < 0:
        return _("was killed by {signal}").format(signal=signal.Signals(-status).name)
    return _("exited with status {status}").format(status=status)
