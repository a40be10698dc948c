"""`python -m trio_echo.server` and the `trio-echo-server` command.

A stop signal can come at once: from a person who saw `listening` from another worker, from a
test harness, from systemd. Python's own handler would raise KeyboardInterrupt (or SIGTERM
kill) in the middle of the imports, with a traceback and a failed status. So the first thing
done is to remember stop signals; the server, once up, takes them over and acts on what came
meanwhile: it stops at once, cleanly (status 0), as if the signal had come a moment later.

The same at the other end: once the server has stopped, a stop signal has nothing left to
stop, but Python's exit puts the default handlers back, and a SIGTERM then kills the process
(a failed status). systemd sends SIGTERM to every process of the service at once, so a
worker gets its own and, a moment later, the one its supervisor forwards: both are ignored
from the end of the run on.
"""

from __future__ import annotations

import signal

_STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGBREAK")
_early: list[int] = []


def _remember(signum: int, _frame: object) -> None:
    _early.append(signum)


def main() -> None:
    stop_signals = [getattr(signal, name) for name in _STOP_SIGNALS if hasattr(signal, name)]
    for signum in stop_signals:
        signal.signal(signum, _remember)
    from trio_echo.server.command import main as run

    try:
        run(early_signals=_early)
    finally:
        for signum in stop_signals:
            signal.signal(signum, signal.SIG_IGN)


if __name__ == "__main__":
    main()
