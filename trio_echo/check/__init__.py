"""The check of a running echo server, as a package of small parts:

- `probes`: a probe's result, the report, the payloads and name resolution both checks share;
- `reach`: getting to the server (TCP, a PROXY header, TLS) and the diagnoses when it fails;
- `tcp`: the TCP check's probes (`Checker`); `udp`: the UDP check's (`UdpChecker`);
- `report`: the report as a table for people or JSON for programs;
- `command`: `main`, the command line (and `--ssh`).
"""

from trio_echo.check.command import main
from trio_echo.check.probes import Probe, ProbeFailed, Report
from trio_echo.check.report import RESULTS, render_json, render_table, title
from trio_echo.check.tcp import Checker
from trio_echo.check.udp import UdpChecker

__all__ = [
    "RESULTS",
    "Checker",
    "Probe",
    "ProbeFailed",
    "Report",
    "UdpChecker",
    "main",
    "render_json",
    "render_table",
    "title",
]
