"""The client's session, sans-IO: what happened, what the server still owes, and how it ended.

h11's `Connection` is the model: the two pumps report what they did (`offering`, `sent`,
`received`, `input_ended`, `server_closed`), and the tracker keeps the counts, the time by
which the server must next be heard from (`deadline`), and the one decision of how the
session ended (`outcome`). No socket, no clock, no task: every time is handed in, so the
whole rule is tested without either (tests/test_session.py).

What the server owes: after our `exit`, its close within the exit timeout (a plain RFC 862
server never closes: `no_exit_reply`, still a clean end); after the end of our input, the
rest of the echo and its close within the close timeout (`no_close`, clean too); while it
holds bytes we sent, more echo within the close timeout (`stalled`, a failure). An idle
session owes nothing. Each wait is counted from the later of the last byte heard and the
moment the debt began.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Final, Literal, final

from trio_echo.events import ClientEndReason

InputEnd = Literal["exit", "eof"]

# The ends that are the session going as planned; any other ends the client with status 1.
CLEAN_ENDS: Final[frozenset[ClientEndReason]] = frozenset(
    {"exit", "eof", "no_exit_reply", "no_close"}
)


@final
class EchoCheck:
    """The echo compared with what was sent, byte for byte: a copy of each piece sent is kept
    until its echo has come back (so at most what is in flight), and the first byte that
    differs, or that came back without having been sent, is `mismatch`: its offset."""

    __slots__ = ("_at", "_compared", "_owed", "mismatch")

    def __init__(self) -> None:
        self._owed: deque[bytes] = deque()  # sent, not yet echoed; the first from `_at` on
        self._at = 0
        self._compared = 0
        self.mismatch: int | None = None

    def sent(self, data: bytes | bytearray | memoryview) -> None:
        if self.mismatch is None and data:
            self._owed.append(bytes(data))

    def received(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        while view and self.mismatch is None:
            if not self._owed:  # more came back than was sent
                self._fail(0)
                return
            head = memoryview(self._owed[0])[self._at :]
            size = min(len(head), len(view))
            if head[:size] != view[:size]:
                self._fail(next(i for i in range(size) if head[i] != view[i]))
                return
            self._compared += size
            view = view[size:]
            self._at += size
            if self._at == len(self._owed[0]):
                self._owed.popleft()
                self._at = 0

    def _fail(self, offset: int) -> None:
        self.mismatch = self._compared + offset
        self._owed.clear()


@final
class SessionTracker:
    """One session's state. `half_close`: whether the stream can say that our input ended
    (TCP can; TLS cannot, and then the session is complete once all of it came back)."""

    __slots__ = (
        "_close_timeout",
        "_exit_timeout",
        "_owed_since",
        "bytes_in",
        "bytes_offered",
        "bytes_out",
        "echo",
        "gave_up",
        "half_close",
        "input_end",
        "server_gone",
    )

    def __init__(
        self, *, half_close: bool, exit_timeout: float, close_timeout: float, now: float
    ) -> None:
        self.half_close = half_close
        self._exit_timeout = exit_timeout
        self._close_timeout = close_timeout
        self.bytes_offered = 0  # counted before each send, which may block
        self.bytes_out = 0
        self.bytes_in = 0
        self.echo = EchoCheck()  # the pumps hand it the bytes themselves
        self.input_end: InputEnd | None = None
        self.server_gone = False
        self.gave_up: ClientEndReason | None = None  # set by `expire`
        self._owed_since = now  # the last byte heard, or when the debt began if later

    # ---- what the pumps report ------------------------------------------------------------

    def offering(self, size: int, now: float) -> None:
        """About to send `size` bytes: from now on they are owed back."""
        if self.bytes_offered <= self.bytes_in:  # nothing was owed: the wait starts now
            self._owed_since = now
        self.bytes_offered += size

    def sent(self, size: int) -> None:
        self.bytes_out += size

    def received(self, size: int, now: float) -> None:
        self.bytes_in += size
        self._owed_since = now

    def input_ended(self, how: InputEnd, now: float) -> None:
        """Our input ended, with `exit` or its end; said *before* the last send, so that the
        server's close, when it comes, is already known to be expected."""
        self.input_end = how
        self._owed_since = now

    def server_closed(self) -> None:
        self.server_gone = True

    # ---- what it decides ------------------------------------------------------------------

    @property
    def complete(self) -> bool:
        """Without a half-close: our input ended and all of it came back (we close first)."""
        return not self.half_close and self.input_end == "eof" and self.bytes_in >= self.bytes_out

    def _debt(self) -> tuple[float, ClientEndReason] | None:
        if self.input_end == "exit":
            return self._exit_timeout, "no_exit_reply"
        if self.input_end == "eof":
            return self._close_timeout, "no_close"
        if self.bytes_offered > self.bytes_in:
            return self._close_timeout, "stalled"
        return None

    def deadline(self) -> float:
        """When to give up on the server if nothing more is heard (inf while it owes
        nothing)."""
        debt = self._debt()
        return math.inf if debt is None else self._owed_since + debt[0]

    def expire(self, now: float) -> bool:
        """Give up if `now` is past the deadline; True if the session is over for that."""
        debt = self._debt()
        if self.gave_up is None and debt is not None and now >= self._owed_since + debt[0]:
            self.gave_up = debt[1]
        return self.gave_up is not None

    def outcome(self) -> ClientEndReason:
        """How it ended, once the pumps have stopped (a broken stream is the caller's to say:
        `reset`, `tls_error`, `error`)."""
        # Without a verdict or an end of input, the server closed while our input went on.
        reason: ClientEndReason = self.gave_up or self.input_end or "server_closed"
        differs = self.echo.mismatch is not None
        if reason in CLEAN_ENDS and (self.bytes_in != self.bytes_out or differs):
            return "echo_mismatch"
        return reason

    def owed(self) -> int:
        """Bytes sent that have not come back."""
        return self.bytes_offered - self.bytes_in

    @property
    def stall_seconds(self) -> float:
        return self._close_timeout
