"""`scripts/remote_check.sh --simulate`: the lab's matrix, on the network of `lab_network`.

The router's firewall DROPs VM -> REMOTE and REJECTs REMOTE -> LOCAL on the echo port, so
that those two paths show how a filtered and a refused port are diagnosed. Real trio-echo
servers run in local, vm and remote; the real client and the check run from each cell's
client host; the HAProxy fleet's cells come from `fleet`.
Everything made is removed at the end, also on Ctrl-C, SIGTERM or failure; a lock keeps two
runs from sharing the names.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Final, Literal

import trio

from trio_echo import capabilities, check, cli, fleet, i18n
from trio_echo.i18n import N_, _
from trio_echo.lab_network import (
    HTTP_PORT,
    PORT,
    RATE,
    REPO,
    SERVER_HOSTS,
    TLS_PORT,
    TOPOLOGY,
    Outcome,
    Started,
    build,
    netem_available,
    ns,
    our_namespaces,
    python_in,
    remove_namespaces,
    run,
    say,
    started,
)

LOCK_FILE: Final = Path("/run/trio-echo-lab.lock")

Expect = Literal["pass", "filtered", "refused", "fragments"]


@dataclass(frozen=True)
class Cell:
    name: str
    client: str
    target: str
    expect: Expect = "pass"
    tls: bool = False  # to the TLS server on TLS_PORT, its certificate pinned
    udp: bool = False  # the UDP echo, checked with --udp and the client's --udp
    path_mtu: int | None = None  # the path MTU the check must find
    websocket: bool = False  # the page's WebSocket (--http), as a browser on REMOTE reaches it

    @property
    def port(self) -> int:
        return HTTP_PORT if self.websocket else TLS_PORT if self.tls else PORT


CELLS: Final = (
    Cell("LOCAL-LOCAL", "local", "198.18.1.1"),
    Cell("VM-VM", "vm", "198.18.1.2"),
    Cell("LOCAL to VM", "local", "198.18.1.2"),
    Cell("VM to LOCAL", "vm", "198.18.1.1"),
    Cell("LOCAL to REMOTE", "local", "198.18.3.2"),
    Cell("LOCAL to REMOTE, TLS", "local", "198.18.3.2", tls=True),
    Cell("REMOTE to VM", "remote", "198.18.1.2"),
    Cell("VM to REMOTE, DROP rule", "vm", "198.18.3.2", "filtered"),
    Cell("REMOTE to LOCAL, REJECT rule", "remote", "198.18.2.1", "refused"),
    Cell("LOCAL to REMOTE, UDP", "local", "198.18.3.2", udp=True, path_mtu=1400),
    Cell("REMOTE to VM, UDP, no fragments", "remote", "198.18.1.2", "fragments", udp=True),
    Cell("VM to REMOTE, UDP DROP rule", "vm", "198.18.3.2", "filtered", udp=True),
    Cell("REMOTE to LOCAL, WebSocket", "remote", "198.18.2.1", websocket=True),
)


# ---- the matrix -------------------------------------------------------------------------


def _mean_rtt(report: dict[str, object]) -> str:
    for probe in report["probes"]:  # type: ignore[attr-defined]
        timed = str(probe["name"]).startswith(("latency", "loss and rtt"))
        if timed and probe["status"] in ("PASS", "WARN"):
            values = str(probe["figure"]).split("= ")[1].split()[0].split("/")
            return _("{value:.3f} ms").format(value=float(values[1]))
    return "-"


def _mebibyte_time(report: dict[str, object]) -> str:
    for probe in report["probes"]:  # type: ignore[attr-defined]
        if probe["name"] == "1 MiB binary" and probe["status"] == "PASS":
            return str(probe["figure"]).split()[-2] + " " + str(probe["figure"]).split()[-1]
    return "-"


def _figure(report: dict[str, object], name: str) -> str:
    for probe in report["probes"]:  # type: ignore[attr-defined]
        if probe["name"] == name:
            return str(probe["figure"] or probe["diagnosis"])
    return ""


def _failure(report: dict[str, object]) -> tuple[str, set[str]]:
    """The first failure, for people, and the causes of all of them, to judge by."""
    failed = [p for p in report["probes"] if p["status"] == "FAIL"]  # type: ignore[attr-defined]
    causes = {str(p.get("cause", "")) for p in failed}
    if not failed:
        return "", causes
    return f"{check.title(failed[0]['name'])}: {failed[0]['diagnosis']}", causes


async def run_cell(cell: Cell, step_seconds: float, fingerprint: str = "") -> Outcome:
    """One cell: the check and the real client, each bounded by `step_seconds` a step; over
    TLS, both pin the server's `fingerprint`. The check speaks the lab's language and says
    why a probe failed in its `cause`; the client's words are read, so it speaks English."""
    timeout = str(step_seconds)
    over = _(" over TLS") if cell.tls else _(" over UDP") if cell.udp else ""
    over = _(" over WebSocket") if cell.websocket else over
    path = f"{cell.client} -> {cell.target}:{cell.port}{over}"
    secure = ["--tls", "--tls-fingerprint", fingerprint] if cell.tls else []
    if cell.udp:
        secure = ["--udp"]
    if cell.websocket:
        secure = ["--websocket"]
    check = await trio.run_process(
        [*python_in(cell.client), "-m", "trio_echo.check", cell.target, str(cell.port),
         "--json", "--timeout", timeout, "--pings", "10", "--lang", i18n.language(), *secure],
        capture_stdout=True, capture_stderr=True, check=False,
    )  # fmt: skip
    report = json.loads(check.stdout)
    line = f"hello from {cell.client}\nexit\n".encode()
    if cell.udp:  # each line a datagram; a shorter wait for each
        secure += ["--udp-timeout", str(step_seconds / 2), "--udp-retries", "1"]
    client = await trio.run_process(
        [*python_in(cell.client), "-m", "trio_echo.client", "--host", cell.target,
         "--port", str(cell.port), "--connect-timeout", timeout, "--quiet", "--lang", "en",
         *secure],
        stdin=line, capture_stdout=True, capture_stderr=True, check=False,
    )  # fmt: skip
    client_ok = client.returncode == 0 and client.stdout == line
    failure, causes = _failure(report)
    if cell.expect == "pass":
        mtu = _figure(report, "path MTU")
        found = cell.path_mtu is None or re.search(rf"\b{cell.path_mtu}\b", mtu) is not None
        met = bool(report["ok"]) and client_ok and found
        result = "PASS" if met else "FAIL"
        detail = _("check and client agree") if met else failure or client.stderr.decode().strip()
        if met and cell.path_mtu is not None:
            detail = f"{detail}; {mtu}"
    elif cell.expect == "fragments":  # small datagrams pass, fragmented ones do not
        met = "fragments" in causes and client_ok
        result = "BLOCKED (fragments)" if met else "UNEXPECTED"
        detail = failure
    else:
        client_words = {"filtered": "probably filtered", "refused": "connection refused"}
        said = client_words[cell.expect] if not cell.udp else "did not come back"
        met = cell.expect in causes and not client_ok and said in client.stderr.decode()
        result = f"BLOCKED ({cell.expect})" if met else "UNEXPECTED"
        detail = failure
    return Outcome(
        cell.name, path, cell.expect, met, result, _mean_rtt(report), _mebibyte_time(report),
        detail,
    )  # fmt: skip


def _prepare_ssh(workdir: Path) -> list[str]:
    """Keys made for this run, an sshd configuration; returns the sshd command line."""
    for key in ("host_key", "client_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(workdir / key)], check=True
        )
    shutil.copy(workdir / "client_key.pub", workdir / "authorized_keys")
    (workdir / "sshd_config").write_text(
        f"ListenAddress 198.18.3.2\nPort 22\nHostKey {workdir / 'host_key'}\n"
        f"PidFile {workdir / 'sshd.pid'}\nAuthorizedKeysFile {workdir / 'authorized_keys'}\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    return ["ip", "netns", "exec", ns("remote"), sshd, "-D", "-e", "-f", f"{workdir}/sshd_config"]


async def run_ssh_cell(nursery: trio.Nursery, workdir: Path, step_seconds: float) -> Outcome:
    """LOCAL to REMOTE through a real OpenSSH server in the remote namespace."""
    timeout = str(step_seconds)
    argv = await trio.to_thread.run_sync(_prepare_ssh, workdir)
    async with started(nursery, "sshd", argv, "Server listening"):
        before = set((await run("ip", "netns", "pids", ns("remote"))).split())
        ssh_options = [
            f"--ssh-option={option}"
            for option in ("-i", str(workdir / "client_key"), "-oStrictHostKeyChecking=no",
                           "-oUserKnownHostsFile=/dev/null", "-oLogLevel=ERROR")
        ]  # fmt: skip
        check = await trio.run_process(
            [*python_in("local"), "-m", "trio_echo.check", "--ssh", "root@198.18.3.2",
             *ssh_options, "--remote-python", f"env PYTHONPATH={REPO} {sys.executable}",
             "--json", "--timeout", timeout, "--lang", i18n.language()],
            capture_stdout=True, capture_stderr=True, check=False,
        )  # fmt: skip
        after = set((await run("ip", "netns", "pids", ns("remote"))).split())
    path = _("local -> ssh root@198.18.3.2, server on a free port")
    if check.returncode not in (0, 1) or not check.stdout:
        return Outcome("LOCAL to REMOTE, --ssh", path, "pass", False, "FAIL", "-", "-",
                       check.stderr.decode().strip())  # fmt: skip
    report = json.loads(check.stdout)
    left = after - before
    met = bool(report["ok"]) and not left
    detail = _("remote server started, checked and stopped; nothing left running")
    if left:
        detail = _("processes left running on remote: {pids}").format(pids=sorted(left))
    elif not report["ok"]:
        detail, _causes = _failure(report)
    return Outcome("LOCAL to REMOTE, --ssh", path, "pass", met, "PASS" if met else "FAIL",
                   _mean_rtt(report), _mebibyte_time(report), detail)  # fmt: skip


def _fingerprint_of(server: Started) -> str:
    for line in server.said:
        if '"server.listening"' in line:
            return str(json.loads(line)["tls_fingerprint"])
    raise cli.Fatal(_("{name} announced no certificate fingerprint").format(name=server.name))


# The matrix's words for people; the outcomes keep their English ones for code and tests.
_EXPECTED: Final = {
    "pass": N_("pass"),
    "filtered": N_("filtered"),
    "refused": N_("refused"),
    "fragments": N_("fragments"),
}
_RESULT_WORDS: Final = {
    **check.RESULTS,
    "UNEXPECTED": N_("UNEXPECTED"),
    "BLOCKED": N_("BLOCKED"),
}


def _result_text(result: str) -> str:
    word, _space, rest = result.partition(" (")
    said = _(_RESULT_WORDS.get(word, word))
    return f"{said} ({_(_EXPECTED.get(rest[:-1], rest[:-1]))})" if rest else said


def render(outcomes: list[Outcome]) -> str:
    heads = (
        _("CELL"), _("PATH"), _("EXPECTED"), _("RESULT"), _("RTT avg"), _("1 MiB echo"),
        _("DETAIL"),
    )  # fmt: skip
    rows = [
        (o.cell, o.path, _(_EXPECTED.get(o.expected, o.expected)), _result_text(o.result), o.rtt,
         o.mebibyte, o.detail)
        for o in outcomes
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in [heads, *rows]) for i in range(6)]
    lines = []
    for row in [heads, *rows]:
        lines.append("  ".join(f"{row[i]:<{widths[i]}}" for i in range(6)) + "  " + row[6])
    return "\n".join(lines)


# ---- the whole run ----------------------------------------------------------------------


@contextmanager
def exclusive() -> Iterator[None]:
    """Refuse to run twice at once: the namespaces' names are fixed."""
    import fcntl  # the lab is Linux's alone (main says so elsewhere)

    with LOCK_FILE.open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise cli.Fatal(
                _("--simulate is already running (pid {holder}); not starting a second").format(
                    holder=holder
                )
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        yield


async def _say_the_network() -> None:
    say(_(TOPOLOGY))
    if await netem_available():
        say(_("note: netem is available, but no delay is added: RTTs are this machine's"))
        return
    say(
        _(
            "note: this kernel has no netem (tc qdisc netem), so no delay or loss "
            "is simulated; the remote link is limited to {RATE} by tbf, and RTTs "
            "are real measurements of these namespaces"
        ).format(RATE=RATE)
    )


def _servers(nursery: trio.Nursery) -> list[AbstractAsyncContextManager[Started, bool | None]]:
    """The lab's echo servers, each to be entered: plain TCP and UDP in every server host,
    TLS in remote."""
    servers: list[AbstractAsyncContextManager[Started, bool | None]] = []
    for host in SERVER_HOSTS:
        argv = [*python_in(host), "-m", "trio_echo.server", "--host", "0.0.0.0",
                "--port", str(PORT), "--udp", "--http", str(HTTP_PORT), "--log-format", "json",
                "--quiet"]  # fmt: skip
        servers.append(started(nursery, f"server on {host}", argv, '"server.listening"'))
    argv = [*python_in("remote"), "-m", "trio_echo.server", "--host", "0.0.0.0",
            "--port", str(TLS_PORT), "--tls", "--log-format", "json", "--quiet"]  # fmt: skip
    servers.append(started(nursery, "TLS server on remote", argv, '"server.listening"'))
    return servers


async def simulate(args: argparse.Namespace) -> int:
    outcomes: list[Outcome] = []
    with exclusive():
        stale = await our_namespaces()
        if stale:
            say(
                _("removing namespaces left by an earlier run that was killed: {value}").format(
                    value=", ".join(stale)
                )
            )
            await remove_namespaces()
        workdir = Path(tempfile.mkdtemp(prefix="trio-echo-lab-"))
        try:
            say(_("building the lab network (namespaces, veth pairs, routes, tbf, nftables) ..."))
            await build()
            await _say_the_network()
            async with trio.open_nursery() as nursery:
                servers = _servers(nursery)
                async with servers[0], servers[1], servers[2], servers[3] as tls_server:
                    fingerprint = _fingerprint_of(tls_server)
                    say(
                        _(
                            "trio-echo servers listen on 0.0.0.0:{PORT} in local, vm and remote"
                        ).format(PORT=PORT)
                    )
                    say(_("running the matrix ..."))
                    for cell in CELLS:
                        say(f"  {cell.name} ...")
                        outcomes.append(await run_cell(cell, args.timeout, fingerprint))
                    if args.ssh:
                        say(_("  LOCAL to REMOTE, --ssh ..."))
                        outcomes.append(await run_ssh_cell(nursery, workdir, args.timeout))
                    if args.fleet:
                        say(_("  REMOTE via HAProxy, then FAILOVER ..."))
                        outcomes += await fleet.run_fleet_cells(nursery, workdir, args.timeout)
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await remove_namespaces()
                shutil.rmtree(workdir, ignore_errors=True)
                left = await our_namespaces()
                say(
                    _("removed every namespace and link it made")
                    if not left
                    else _("LEFT: {left}").format(left=left)
                )
    say("")
    say(render(outcomes))
    met = sum(o.met for o in outcomes)
    say(_("\n{met} of {len} cells as expected").format(met=met, len=len(outcomes)))
    return 0 if met == len(outcomes) else cli.EXIT_FAILURE


async def _stop_on_signals(scope: trio.CancelScope, signals: AsyncIterator[int]) -> None:
    async for _signal in signals:
        say(_("interrupted: cleaning up"))
        scope.cancel()
        return


async def _main(args: argparse.Namespace) -> int:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_on_signals, nursery.cancel_scope, signals)
            status = await simulate(args)
            nursery.cancel_scope.cancel()
            return status
    return cli.EXIT_INTERRUPTED


def main(argv: Sequence[str] | None = None) -> None:
    i18n.setup(argv)  # before the parser: its help is in the chosen language
    parser = cli.parser(
        "remote_check.sh --simulate",
        N_(
            "Build a local / VM / remote lab network of namespaces (198.18.0.0/15), run the lab's "
            "matrix with real trio-echo servers and clients, and remove it all. Needs root."
        ),
    )
    parser.add_argument(
        "--timeout", type=cli.positive_float, default=2.0, help=N_("seconds per step")
    )
    parser.add_argument("--no-ssh", dest="ssh", action="store_false", help=N_("skip the ssh cell"))
    parser.add_argument(
        "--no-fleet", dest="fleet", action="store_false", help=N_("skip the HAProxy fleet's cells")
    )
    args = parser.parse_args(argv)
    if capabilities.system() != "linux":
        print(
            _(
                "remote_check.sh --simulate: error: the lab's network is made of Linux network "
                "namespaces, which {platform} does not have: run it in a Linux VM"
            ).format(platform=capabilities.platform_name()),
            file=sys.stderr,
        )
        sys.exit(cli.EXIT_FAILURE)
    if os.geteuid() != 0:
        print(
            _(
                "remote_check.sh --simulate: error: needs root, to create network namespaces "
                "(run it with sudo)"
            ),
            file=sys.stderr,
        )
        sys.exit(cli.EXIT_FAILURE)
    tools = ("ip", "tc", "nft") + (("ssh", "ssh-keygen") if args.ssh else ())
    for tool in tools + (("haproxy",) if args.fleet else ()):
        if shutil.which(tool) is None:
            print(
                _("remote_check.sh --simulate: error: {tool} is not installed").format(tool=tool),
                file=sys.stderr,
            )
            sys.exit(cli.EXIT_FAILURE)
    sys.exit(cli.run_async(partial(_main, args), "remote_check.sh --simulate", "lab"))


if __name__ == "__main__":
    main()
