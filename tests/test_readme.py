"""The README's front-door commands are the ones CI proves."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def commands(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.startswith("python3 -m venv")]


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = commands((ROOT / "README.md").read_text())
    ci = commands((ROOT / ".ci" / "run").read_text())
    test_command = [line for line in readme if "pytest" in line]
    assert len(test_command) == 1
    assert test_command == ci


def test_readme_start_command_starts_the_server() -> None:
    [start] = [line for line in commands((ROOT / "README.md").read_text()) if "pytest" not in line]
    assert start.endswith("trio-echo-server")
