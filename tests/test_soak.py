"""A short run of scripts/soak.py (the long one is run by hand; figures in the README)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import trio

SOAK = Path(__file__).resolve().parent.parent / "scripts" / "soak.py"


async def test_a_short_soak_loses_and_leaks_nothing() -> None:
    with trio.fail_after(120):
        result = await trio.run_process(
            [sys.executable, str(SOAK), "--duration", "15", "--clients", "20"],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    out = result.stdout.decode()
    assert result.returncode == 0, out + result.stderr.decode()
    assert "connections that lost a received byte: 0" in out
    assert out.rstrip().endswith("soak: PASS")
    # A progress line at least every 10 s: elapsed, connections, bytes, errors, RSS.
    assert re.search(r"\n +10 s: [\d,]+ connections, [\d,]+ bytes verified, \d+ errors", out)
