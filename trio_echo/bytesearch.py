"""`bytes.find` for large pieces, through the C library's `memmem` where there is one.

The `exit` rule needs every byte of the input looked at once, for the word `exit`. CPython
3.11's own search skips ahead only past bytes that are not in the word, and in text `e`,
`i` and `t` are everywhere: measured 0.75 ms per MiB of the benchmark's lines, a quarter of
the client's time on a 500 MiB file; glibc's `memmem` took 0.45 ms per MiB on the same
lines (see `scripts/bench/benchmarks.md`). Small pieces (a typed line, the server's 1 KiB
reads) keep `bytes.find`: for them the call costs more than the search. `ctypes` costs no
start-up time (trio imports it); the C library is looked up at the first large search.
"""

from __future__ import annotations

import ctypes
import functools
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Callable

    Memmem = Callable[[int, int, bytes, int], int | None]

LARGE: Final = 64 << 10  # from this many bytes on, memmem


def find(haystack: bytes | bytearray, needle: bytes, start: int = 0) -> int:
    """`haystack.find(needle, start)`, the same answer, faster when it is large."""
    if len(haystack) - start < LARGE or not needle or start < 0:
        return haystack.find(needle, start)
    memmem = _memmem()
    if memmem is None:
        return haystack.find(needle, start)
    if isinstance(haystack, bytes):
        base = ctypes.cast(ctypes.c_char_p(haystack), ctypes.c_void_p).value
    else:  # the address of a bytearray's storage, borrowed for this call only
        base = ctypes.addressof(ctypes.c_char.from_buffer(haystack))
    assert base is not None
    at = memmem(base + start, len(haystack) - start, needle, len(needle))
    return -1 if at is None else at - base


@functools.cache
def _memmem() -> Memmem | None:
    """The C library's memmem, looked up on the first large search."""
    try:
        function = ctypes.CDLL(None).memmem
    except (OSError, AttributeError):
        return None  # no memmem in this C library: bytes.find does the work
    function.restype = ctypes.c_void_p
    function.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]
    return function
