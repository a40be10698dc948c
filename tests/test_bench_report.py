"""The benchmark's arithmetic (its speeds are never judged here: CI only smoke-runs it)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent.parent / "scripts" / "bench"
sys.path.insert(0, str(BENCH))  # its modules import one another as run.py's neighbours
SPEC = importlib.util.spec_from_file_location("report", BENCH / "report.py")
assert SPEC is not None
assert SPEC.loader is not None
bench: Any = importlib.util.module_from_spec(SPEC)
sys.modules[SPEC.name] = bench  # its dataclasses look their module up there
SPEC.loader.exec_module(bench)


def run(server: str, round_no: int, rate: float, **extra: object) -> dict[str, Any]:
    return {"server": server, "round": round_no, "size": 1024, "conns": 10,
            "msg_per_s": rate, **extra}  # fmt: skip


def test_ratios_are_taken_within_a_round_then_the_median() -> None:
    # The machine slowed down in round 2 for both: ratios within a round see through that;
    # a ratio of the two medians (60 / 40 = 1.5) would not.
    runs = [run("a", 1, 100), run("b", 1, 50), run("a", 2, 20), run("b", 2, 40),
            run("a", 3, 60), run("b", 3, 30)]  # fmt: skip
    assert bench.round_ratio(runs, "a", "b", 1024, 10) == 2.0


def test_failed_and_missing_runs_are_left_out_of_ratios() -> None:
    runs = [run("a", 1, 100), run("b", 1, 50), run("a", 2, 100, error="refused"),
            run("b", 2, 10), run("b", 3, 10)]  # fmt: skip
    assert bench.round_ratio(runs, "a", "b", 1024, 10) == 2.0
    assert bench.round_ratio(runs, "a", "c", 1024, 10) is None


def test_medians_carry_the_same_round_ratios() -> None:
    names = ("trio-echo", bench.TUTORIAL, bench.UVLOOP)
    runs = [run(name, r, rate, mib_per_s=1.0, p50_us=1, p99_us=2, load_cpu=0.5)
            for r, rates in enumerate([(90, 30, 60), (80, 40, 80)], start=1)
            for name, rate in zip(names, rates, strict=True)]  # fmt: skip
    [row] = [row for row in bench.medians(runs) if row["server"] == "trio-echo"]
    assert row["msg_per_s"] == 85
    assert row["x_tutorial"] == 2.5  # median of 3.0 and 2.0
    assert row["x_uvloop"] == 1.25  # median of 1.5 and 1.0


def test_the_published_report_is_a_function_of_the_published_results() -> None:
    """benchmarks.md's results section is what report.py makes of benchmarks.json: nothing in
    the report comes from anywhere but the results."""
    results = bench.load(BENCH / "benchmarks.json")
    text = bench.markdown(results, "benchmarks.png")
    published = (BENCH / "benchmarks.md").read_text()
    inner = published.split(bench.RESULTS_START, 1)[1].split(bench.RESULTS_END, 1)[0]
    assert inner.strip() == text.strip()
