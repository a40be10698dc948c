"""A short chaos run (scripts/chaos.py): a worker stopped and killed, the log's reader gone,
descriptors exhausted while TLS handshakes are owed, a KeyUpdate flood; every verdict held.
The long run is done by hand; its figures are in docs/reliability.md."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import trio

from tests.conftest import require_tool

CHAOS = Path(__file__).resolve().parent.parent / "scripts" / "chaos.py"
SCENARIOS = [
    "stop-worker", "kill-worker", "log-closed", "log-closed-fleet", "fd-exhaustion",
    "keyupdate-flood",
]  # fmt: skip


async def test_a_short_chaos_run_loses_no_byte_and_leaks_nothing() -> None:
    require_tool("cc")  # the KeyUpdate flood is C (scripts/bench/tls_load.c)
    with trio.fail_after(400):
        result = await trio.run_process(
            [sys.executable, str(CHAOS), "--duration", "5", "--clients", "10"],
            capture_stdout=True, capture_stderr=True, check=False,
        )  # fmt: skip
    out = result.stdout.decode()
    assert result.returncode == 0, out + result.stderr.decode()[-3000:]
    for scenario in SCENARIOS:
        assert f"\n{scenario}: PASS (" in f"\n{out}", out
    verdicts = re.findall(r"bytes lost in (\d+); never ended (\d+);.*wrong echoes (\d+)", out)
    assert len(verdicts) == len(SCENARIOS)
    assert all(verdict == ("0", "0", "0") for verdict in verdicts), verdicts
    # The faults happened: the clients met the killed worker's fleet going down (its open
    # connections cut, new ones refused), accepting paused.
    assert re.search(r"kill-worker: PASS(.*\n){3}.* [1-9][\d,]* sessions cut short or refused", out)
    assert re.search(r"accepting paused and resumed [1-9]\d* times", out)
    assert out.rstrip().endswith("chaos: PASS")
