"""`remote_check.sh --simulate`: the matrix across namespaces, and that it leaves nothing."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from tests.conftest import require_tool
from tests.processes import PATIENCE, reading
from trio_echo.lab import LOCK_FILE
from trio_echo.lab_network import PREFIX

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "remote_check.sh"
ENV = {**os.environ, "TRIO_ECHO_PYTHON": sys.executable}


def need_lab() -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("CI runs as root, and must run the lab")
        pytest.skip("the lab needs root")
    for tool in ("ip", "tc", "nft", "ssh", "sshd", "haproxy"):
        require_tool(tool)


async def simulate() -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(180):
        return await trio.run_process(
            [str(SCRIPT), "--simulate"],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=ENV,
        )


async def our_namespaces() -> list[str]:
    listing = await trio.run_process(["ip", "-json", "netns", "list"], capture_stdout=True)
    names = [entry["name"] for entry in json.loads(listing.stdout or b"[]")]
    return [name for name in names if name.startswith(PREFIX)]


async def test_the_matrix_runs_and_everything_is_removed() -> None:
    need_lab()
    with trio.fail_after(180):
        result = await trio.run_process(
            [str(SCRIPT), "--simulate"],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=ENV,
        )
    out = result.stdout.decode()
    assert result.returncode == 0, out + result.stderr.decode()
    assert "17 of 17 cells as expected" in out
    for cell in ("LOCAL-LOCAL", "VM-VM", "LOCAL to VM", "VM to LOCAL", "LOCAL to REMOTE",
                 "LOCAL to REMOTE, TLS", "REMOTE to VM", "LOCAL to REMOTE, --ssh",
                 "LOCAL to REMOTE, UDP", "REMOTE via HAProxy", "FAILOVER",
                 "REMOTE to LOCAL, WebSocket", "REMOTE via HAProxy, WebSocket"):  # fmt: skip
        assert any(line.startswith(cell + " ") and " PASS " in line for line in out.splitlines())
    assert "BLOCKED (filtered)" in out
    assert "BLOCKED (refused)" in out
    # Over UDP: the path MTU of the router's 1,400-byte link, and the fragments it drops.
    assert "path MTU 1400 (" in out
    assert "BLOCKED (fragments)" in out
    assert "IP fragments are dropped on the path" in out
    # The fleet: both backends saw REMOTE's own address; the stopped one lost no byte.
    assert "every backend saw REMOTE's own address (198.18.3.2) via HAProxy" in out
    assert ", 0 wrong, 0 failed; vm drained " in out
    assert "0 with a byte lost); HAProxy marked vm down " in out
    assert "removed every namespace and link it made" in out
    assert "  FAILOVER ..." not in out  # the fleet's cells are announced together
    assert "  LOCAL to REMOTE, UDP ..." in out  # says which cell it is on as it runs
    assert await our_namespaces() == []


async def test_ctrl_c_in_the_middle_still_removes_everything() -> None:
    need_lab()
    process = await trio.lowlevel.open_process(
        [str(SCRIPT), "--simulate"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=ENV
    )
    assert process.stdout is not None
    async with reading(process.stdout) as out:
        await out.until("running the matrix")
        assert await our_namespaces() != []
        process.send_signal(signal.SIGINT)
        with trio.fail_after(PATIENCE * 2):
            await out.rest()
            status = await process.wait()
    assert status != 0
    assert "interrupted: cleaning up" in out.seen
    assert "removed every namespace and link it made" in out.seen
    assert await our_namespaces() == []


async def test_two_runs_at_once_are_refused() -> None:
    need_lab()
    with LOCK_FILE.open("a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = await simulate()
    assert result.returncode == 1
    assert b"already running" in result.stderr
    assert await our_namespaces() == []


async def test_without_root_it_says_so() -> None:
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root (to drop it) and setpriv")
    as_nobody = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    result = await trio.run_process(
        [*as_nobody, str(SCRIPT), "--simulate"], capture_stderr=True, check=False, env=ENV
    )
    assert result.returncode == 1
    assert b"needs root" in result.stderr
    assert b"Traceback" not in result.stderr
    russian = await trio.run_process(
        [*as_nobody, str(SCRIPT), "--simulate", "--lang", "ru"],
        capture_stderr=True, check=False, env=ENV,
    )  # fmt: skip
    assert russian.returncode == 1
    assert "нужны права root".encode() in russian.stderr
