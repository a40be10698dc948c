"""`scripts/remote_check.sh --simulate`: a small lab network in namespaces, and the matrix.

Hosts are network namespaces joined by veth pairs, with addresses in 198.18.0.0/15 (the
range reserved for benchmarking networks) only: see `TOPOLOGY`. The router is also the
firewall: it DROPs VM -> REMOTE and REJECTs REMOTE -> LOCAL on the echo port, so that those
two paths show how a filtered and a refused port are diagnosed. Real trio-echo servers run
in local, vm and remote; the real client and the check run from each cell's client host.
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
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Final, Literal

import trio

from trio_echo import capabilities, check, cli, i18n
from trio_echo.i18n import N_, _

PREFIX: Final = "trio-echo-"
LOCK_FILE: Final = Path("/run/trio-echo-lab.lock")
PORT: Final = 7007
TLS_PORT: Final = 7443  # the TLS server in remote (ephemeral certificate, pinned by the cell)
RATE: Final = "20mbit"
HOSTS: Final = ("local", "vm", "router", "remote")
SERVER_HOSTS: Final = ("local", "vm", "remote")
REPO: Final = Path(__file__).resolve().parent.parent

TOPOLOGY: Final = N_(
    """\
  vm 198.18.1.2 ==host-only== 198.18.1.1 local 198.18.2.1 ===== 198.18.2.254 router
                                               router 198.18.3.254 ==tbf== 198.18.3.2 remote
  router firewall: VM -> REMOTE dropped, REMOTE -> LOCAL rejected (tcp port 7007);
  VM -> REMOTE dropped (udp port 7007); IP fragments REMOTE -> VM dropped
  router <-> remote link MTU 1400; servers answer UDP too (--udp)
  remote also serves TLS on 7443 (an ephemeral certificate, pinned by its fingerprint)"""
)

Expect = Literal["pass", "filtered", "refused", "fragments"]


@dataclass(frozen=True)
class Link:
    a: str
    a_if: str
    a_addr: str
    b: str
    b_if: str
    b_addr: str


LINKS: Final = (
    Link("local", "hostonly0", "198.18.1.1/24", "vm", "eth0", "198.18.1.2/24"),
    Link("local", "wan0", "198.18.2.1/24", "router", "lan0", "198.18.2.254/24"),
    Link("router", "wan0", "198.18.3.254/24", "remote", "eth0", "198.18.3.2/24"),
)
ROUTES: Final = {
    "vm": ["default", "via", "198.18.1.1"],
    "local": ["198.18.3.0/24", "via", "198.18.2.254"],
    "router": ["198.18.1.0/24", "via", "198.18.2.1"],
    "remote": ["default", "via", "198.18.3.254"],
}
FORWARDERS: Final = ("local", "router")
FIREWALL: Final = f"""table inet trio_echo_lab {{
    chain forward {{
        type filter hook forward priority 0; policy accept;
        ip saddr 198.18.1.2 ip daddr 198.18.3.2 tcp dport {PORT} drop
        ip saddr 198.18.3.2 ip daddr 198.18.2.1 tcp dport {PORT} reject with tcp reset
        ip saddr 198.18.1.2 ip daddr 198.18.3.2 udp dport {PORT} drop
        ip saddr 198.18.3.2 ip daddr 198.18.1.2 ip frag-off & 0x3fff != 0 drop
    }}
}}
"""
# The router's link to remote has a smaller MTU, for the UDP check to find.
SMALL_MTU: Final = 1400


@dataclass(frozen=True)
class Cell:
    name: str
    client: str
    target: str
    expect: Expect = "pass"
    tls: bool = False  # to the TLS server on TLS_PORT, its certificate pinned
    udp: bool = False  # the UDP echo, checked with --udp and the client's --udp
    path_mtu: int | None = None  # the path MTU the check must find

    @property
    def port(self) -> int:
        return TLS_PORT if self.tls else PORT


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
)


@dataclass
class Outcome:
    cell: str
    path: str
    expected: str
    met: bool
    result: str
    rtt: str
    mebibyte: str
    detail: str


def ns(host: str) -> str:
    return PREFIX + host


def python_in(host: str) -> list[str]:
    """Our Python, run inside a host's namespace, able to import this checkout."""
    return ["ip", "netns", "exec", ns(host), "env", f"PYTHONPATH={REPO}", sys.executable]


async def run(*argv: str, stdin: bytes = b"") -> str:
    result = await trio.run_process(
        list(argv), stdin=stdin, capture_stdout=True, capture_stderr=True, check=False
    )
    if result.returncode != 0:
        raise cli.Fatal(
            _("`{value}` failed: {value2}").format(
                value=" ".join(argv), value2=result.stderr.decode().strip()
            )
        )
    return result.stdout.decode()


def say(text: str) -> None:
    print(text, flush=True)


# ---- building and removing the network --------------------------------------------------


async def our_namespaces() -> list[str]:
    listing = await run("ip", "-json", "netns", "list")
    names = [entry["name"] for entry in json.loads(listing or "[]")]
    return [name for name in names if name.startswith(PREFIX)]


async def remove_namespaces() -> None:
    for name in await our_namespaces():
        await run("ip", "netns", "del", name)  # removes the veths inside it too


async def netem_available() -> bool:
    """Whether this kernel has netem (delay and loss); this one is said to lack it."""
    on_lo = ["ip", "netns", "exec", ns("remote"), "tc", "qdisc"]
    probe = await trio.run_process(
        [*on_lo, "add", "dev", "lo", "root", "netem", "delay", "0ms"],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    if probe.returncode == 0:
        await run(*on_lo, "del", "dev", "lo", "root")
    return probe.returncode == 0


async def build() -> None:
    for host in HOSTS:
        await run("ip", "netns", "add", ns(host))
        await run("ip", "-n", ns(host), "link", "set", "lo", "up")
    for link in LINKS:
        await run(
            "ip", "link", "add", link.a_if, "netns", ns(link.a), "type", "veth",
            "peer", "name", link.b_if, "netns", ns(link.b),
        )  # fmt: skip
        ends = ((link.a, link.a_if, link.a_addr), (link.b, link.b_if, link.b_addr))
        for host, interface, address in ends:
            await run("ip", "-n", ns(host), "addr", "add", address, "dev", interface)
            await run("ip", "-n", ns(host), "link", "set", interface, "up")
    for host, route in ROUTES.items():
        await run("ip", "-n", ns(host), "route", "add", *route)
    for host in FORWARDERS:
        await run("ip", "netns", "exec", ns(host), "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
    # The remote link is slow, and its MTU small: a token bucket on both ends of router <->
    # remote.
    for host, interface in (("router", "wan0"), ("remote", "eth0")):
        await run("ip", "-n", ns(host), "link", "set", interface, "mtu", str(SMALL_MTU))
        await run(
            "ip", "netns", "exec", ns(host), "tc", "qdisc", "add", "dev", interface, "root",
            "tbf", "rate", RATE, "burst", "32kbit", "latency", "400ms",
        )  # fmt: skip
    await run("ip", "netns", "exec", ns("router"), "nft", "-f", "-", stdin=FIREWALL.encode())


# ---- processes inside the namespaces ------------------------------------------------------


@dataclass
class Started:
    name: str
    process: trio.Process
    said: list[str]
    heard: trio.Event = field(default_factory=trio.Event)  # set, and renewed, on new lines

    def hear(self, lines: list[bytes]) -> None:
        self.said.extend(line.decode(errors="replace") for line in lines)
        self.heard.set()
        self.heard = trio.Event()


async def _drain(stream: trio.abc.ReceiveStream, entry: Started, buffer: bytes) -> None:
    """Keep reading a process's stderr (so it never blocks on a full pipe) until it ends."""
    while chunk := await stream.receive_some(65536):
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        entry.hear(lines)


@asynccontextmanager
async def started(
    nursery: trio.Nursery, name: str, argv: list[str], ready: str
) -> AsyncIterator[Started]:
    """Start a process, wait until its stderr says `ready`, and stop it (by PID) after."""
    process = await trio.lowlevel.open_process(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert process.stderr is not None
    entry = Started(name, process, [])
    try:
        buffer = b""
        with trio.fail_after(20):
            while not any(ready in line for line in entry.said):
                chunk = await process.stderr.receive_some(65536)
                if not chunk:
                    raise cli.Fatal(
                        _("{name} did not start: {value}").format(
                            name=name, value=" / ".join(entry.said[-3:])
                        )
                    )
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                entry.hear(lines)
        nursery.start_soon(_drain, process.stderr, entry, buffer)
        yield entry
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.terminate()
                with trio.move_on_after(5):
                    await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


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
    path = f"{cell.client} -> {cell.target}:{cell.port}{over}"
    secure = ["--tls", "--tls-fingerprint", fingerprint] if cell.tls else []
    if cell.udp:
        secure = ["--udp"]
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
        if '"listening"' in line:
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
            say(_(TOPOLOGY))
            if await netem_available():
                say(_("note: netem is available, but no delay is added: RTTs are this machine's"))
            else:
                say(
                    _(
                        "note: this kernel has no netem (tc qdisc netem), so no delay or loss "
                        "is simulated; the remote link is limited to {RATE} by tbf, and RTTs "
                        "are real measurements of these namespaces"
                    ).format(RATE=RATE)
                )
            async with trio.open_nursery() as nursery:
                servers = []
                for host in SERVER_HOSTS:
                    argv = [*python_in(host), "-m", "trio_echo.server", "--host", "0.0.0.0",
                            "--port", str(PORT), "--udp", "--log-format", "json",
                            "--quiet"]  # fmt: skip
                    servers.append(started(nursery, f"server on {host}", argv, '"listening"'))
                argv = [*python_in("remote"), "-m", "trio_echo.server", "--host", "0.0.0.0",
                        "--port", str(TLS_PORT), "--tls", "--log-format", "json",
                        "--quiet"]  # fmt: skip
                servers.append(started(nursery, "TLS server on remote", argv, '"listening"'))
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
                        from trio_echo import fleet

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
