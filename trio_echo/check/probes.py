"""What every check shares, TCP's and UDP's: a probe's result (`Probe`), the report that
gathers them (`Report`, with the runner `Report.probe`), a probe's worded failure
(`ProbeFailed`), name resolution, and payloads with no `exit` line in them."""

from __future__ import annotations

import random
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

import trio

from trio_echo import cli
from trio_echo.i18n import _
from trio_echo.protocol import ExitDetector

Status = Literal["PASS", "WARN", "FAIL", "SKIP"]  # WARN passes, with something to look at


@dataclass
class Probe:
    name: str
    status: Status
    figure: str = ""
    diagnosis: str = ""
    required: bool = True
    # Why it failed, for programs (the lab): "filtered", "refused", "unreachable", "resolve",
    # "fragments" where the check can tell; the diagnosis says it for people.
    cause: str = ""


@dataclass
class Report:
    host: str
    port: int
    probes: list[Probe] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(p.status in ("PASS", "WARN") for p in self.probes if p.required)

    async def probe(self, name: str, action: Callable[[], Awaitable[str]]) -> bool:
        """Run one probe: PASS with its figure, or FAIL with its diagnosis; whether it passed."""
        try:
            figure = await action()
        except ProbeFailed as failed:
            self.probes.append(Probe(name, "FAIL", diagnosis=str(failed), cause=failed.cause))
            return False
        except (OSError, trio.BrokenResourceError) as exc:
            self.probes.append(Probe(name, "FAIL", diagnosis=cli.describe(exc)))
            return False
        self.probes.append(Probe(name, "PASS", figure))
        return True


class ProbeFailed(Exception):
    """A probe's failure, already worded as a diagnosis, and its `cause` for programs."""

    def __init__(self, diagnosis: str, cause: str = "") -> None:
        super().__init__(diagnosis)
        self.cause = cause


def payload_without_exit(size: int, seed: int) -> bytes:
    """Random bytes (newlines included) in which no line is `exit`, by our own rule."""
    rng = random.Random(seed)
    while True:
        data = rng.randbytes(size)
        detector = ExitDetector()
        if detector.feed(data) is None and not detector.end_of_input():
            return data


async def resolve(
    host: str, port: int, kind: socket.SocketKind, patience: float
) -> tuple[int, tuple[str, int], str]:
    """The first address `host` names (its family and address) and all of them in words;
    ProbeFailed, worded, if it names none within `patience` seconds."""
    try:
        with trio.fail_after(patience):
            infos = await trio.socket.getaddrinfo(host, port, type=kind)
    except trio.TooSlowError:
        raise ProbeFailed(
            _("resolving {host!r} timed out: the name server does not answer").format(host=host)
        ) from None
    except socket.gaierror as exc:
        raise ProbeFailed(
            _(
                "the name {host!r} does not resolve ({error}): check its spelling, "
                "/etc/hosts or DNS, or use the IP address"
            ).format(host=host, error=cli.os_error_text(exc))
        ) from None
    family, _kind, _proto, _name, first = infos[0]
    addresses = ", ".join(sorted({str(info[4][0]) for info in infos}))
    return family, (str(first[0]), int(first[1])), addresses
