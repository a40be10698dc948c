"""The lab's network: hosts as network namespaces joined by veth pairs, with addresses in
198.18.0.0/15 (the range reserved for benchmarking networks) only, see `TOPOLOGY`; the router
is also the firewall (it DROPs VM -> REMOTE and REJECTs REMOTE -> LOCAL on the echo port);
and the programs started inside them (`started`), each ended with the network. The matrix
(`lab`) and the fleet (`fleet`) are built on it: network -> fleet -> matrix.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import trio

from trio_echo import cli
from trio_echo.i18n import N_, _

PREFIX: Final = "trio-echo-"
PORT: Final = 7007
TLS_PORT: Final = 7443  # the TLS server in remote (ephemeral certificate, pinned by the cell)
HTTP_PORT: Final = 7080  # every server's page and WebSocket echo (--http)
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
  remote also serves TLS on 7443 (an ephemeral certificate, pinned by its fingerprint);
  every server serves its page and WebSocket echo on 7080 (--http), which no rule blocks"""
)


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
