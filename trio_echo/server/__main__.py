"""`python -m trio_echo.server` and the `trio-echo-server` command.

A stop signal can come at once: from a person who saw `listening` from another worker, from a
test harness, from systemd. Python's own handler would raise KeyboardInterrupt (or SIGTERM
kill) in the middle of the imports, with a traceback and a failed status. So the first thing
done is to remember stop signals; the server, once up, takes them over and acts on what came
meanwhile: it stops at once, cleanly (status 0), as if the signal had come a moment later.
"""

from __future__ import annotations

import signal

_early: list[int] = []


def _remember(signum: int, _frame: object) -> None:
    _early.append(signum)


def main() -> None:
    for name in ("SIGINT", "SIGTERM", "SIGBREAK"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _remember)
    from trio_echo.server.command import main as run

    run(early_signals=_early)


if __name__ == "__main__":
    main()
