"""The `exit` command, as pure sans-IO code.

A *line* is the bytes up to and including ``\\n``. A line that, with its line ending (``\\n`` or
``\\r\\n``) and the spaces and tabs around it removed, is exactly ``exit`` ends the session.
At the end of input, an unfinished last line is judged as if its ``\\n`` had arrived (so a
final ``exit`` or ``exit\\r`` without ``\\n`` counts too).

`ExitDetector` sees bytes in whatever pieces the network delivers and answers where to cut.
It keeps O(1) state (which of a handful of positions in the pattern the current line is
at), never the line itself, so a gigabyte without a newline costs no memory. The server and
the client both use it; neither looks at line structure itself.
"""

from __future__ import annotations

from enum import Enum
from typing import Final, final

from trio_echo import bytesearch

EXIT_WORD: Final = b"exit"
_BLANKS: Final = b" \t"


class _State(Enum):
    """How much of ``[ \\t]* exit [ \\t]* \\r?`` the current line has matched so far."""

    LEADING = 0  # only spaces and tabs so far (or nothing): the line may still be `exit`
    E = 1  # ...then "e"
    EX = 2  # ...then "ex"
    EXI = 3  # ...then "exi"
    EXIT = 4  # ...then "exit", maybe followed by spaces and tabs
    EXIT_CR = 5  # ...then "\r": only "\n" can follow
    DEAD = 6  # this line is not `exit`, whatever comes before its "\n"


_PARTIAL: Final = (_State.LEADING, _State.E, _State.EX, _State.EXI)
_MATCHED: Final = (_State.EXIT, _State.EXIT_CR)


def _advance(state: _State, piece: bytes | bytearray) -> _State:
    """Return the state after `piece`, a part of one line that holds no ``\\n``."""
    if state is _State.DEAD or not piece:
        return state
    if state is _State.EXIT_CR:
        return _State.DEAD
    if state is _State.LEADING:
        piece = piece.lstrip(_BLANKS)
        if not piece:
            return _State.LEADING
    if state in _PARTIAL:
        matched = state.value
        needed = EXIT_WORD[matched:]
        if len(piece) < len(needed):
            if needed.startswith(piece):
                return _State(matched + len(piece))
            return _State.DEAD
        if not piece.startswith(needed):
            return _State.DEAD
        piece = piece[len(needed) :]
    # Now in EXIT: only blanks, then at most one "\r", may follow before "\n".
    rest = piece.lstrip(_BLANKS)
    if not rest:
        return _State.EXIT
    if rest == b"\r":
        return _State.EXIT_CR
    return _State.DEAD


@final
class ExitDetector:
    """Finds the first `exit` line in a byte stream fed piece by piece.

    `feed` returns None while no `exit` line has ended, or the index in the piece just after
    the ``\\n`` that ends it: the caller keeps ``piece[:index]`` and nothing after. Once it
    has fired the detector stays fired; feeding it more is a caller's mistake.
    """

    __slots__ = ("_fired", "_state")

    def __init__(self) -> None:
        self._state = _State.LEADING
        self._fired = False

    @property
    def fired(self) -> bool:
        """Whether an `exit` line has been seen."""
        return self._fired

    def feed(self, piece: bytes | bytearray) -> int | None:
        """Take the next piece of the stream; return where to cut it, or None."""
        if self._fired:
            raise RuntimeError("ExitDetector fed after it fired")
        state = self._state
        start = 0
        if state is _State.DEAD:  # the usual case: only a newline can change anything
            newline = piece.find(b"\n")
            if newline < 0:
                return None
            state, start = _State.LEADING, newline + 1
        # No `exit` line can end in the rest unless the word is in it, or a match is under
        # way: then only the last, unfinished line matters.
        if state is _State.LEADING and bytesearch.find(piece, EXIT_WORD, start) < 0:
            last_newline = piece.rfind(b"\n", start)
            self._state = _advance(state, piece[max(start, last_newline + 1) :])
            return None
        while True:
            newline = piece.find(b"\n", start)
            if newline < 0:
                self._state = _advance(state, piece[start:])
                return None
            state = _advance(state, piece[start:newline])
            if state in _MATCHED:
                self._fired = True
                return newline + 1
            state = _State.LEADING
            start = newline + 1

    def end_of_input(self) -> bool:
        """Tell the detector the stream ended; return whether its last line was `exit`."""
        if self._state in _MATCHED:
            self._fired = True
        return self._fired


def is_exit_line(line: bytes) -> bool:
    """The rule for one whole line (with or without its ending), stated plainly.

    This is the reference the streaming detector is tested against.
    """
    body = line.removesuffix(b"\n").removesuffix(b"\r")
    return body.strip(_BLANKS) == EXIT_WORD
