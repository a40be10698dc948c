"""`bytes.find` for large pieces, through the C library where it is faster.

The `exit` rule needs every byte of the input looked at once, for the word `exit`. CPython
3.11's own search skips ahead only past bytes that are not in the word, and in text `e`,
`i` and `t` are everywhere; glibc's `memmem`, and `strstr` (which compares many bytes at
once but stops at a NUL byte) are faster (figures: scripts/bench/benchmarks.md). So: text
with no NUL byte before the end (`bytes.find(b"\\0")`, a vector search), `strstr`; anything
with a NUL byte, `memmem`. `strstr` may run to the end of the object because CPython keeps
a NUL byte after the contents of every `bytes` and `bytearray` (its C API promises it).

Small pieces (a typed line, the server's 1 KiB reads) keep `bytes.find`: for them the call
costs more than the search. `ctypes` costs no start-up time (trio imports it); the C
library is looked up at the first large search, where there is one
(`capabilities.c_search`). See `scripts/bench/benchmarks.md`.
"""

from __future__ import annotations

import ctypes
from typing import Final

from trio_echo.capabilities import c_search

LARGE: Final = 64 << 10  # from this many bytes on, the C library


def find(haystack: bytes | bytearray, needle: bytes, start: int = 0) -> int:
    """`haystack.find(needle, start)`, the same answer, faster when it is large."""
    if len(haystack) - start < LARGE or start < 0 or not needle or b"\0" in needle:
        return haystack.find(needle, start)
    c = c_search()
    if c is None:
        return haystack.find(needle, start)
    if isinstance(haystack, bytes):
        base = ctypes.cast(ctypes.c_char_p(haystack), ctypes.c_void_p).value
    else:  # the address of a bytearray's storage, borrowed for this call only
        base = ctypes.addressof(ctypes.c_char.from_buffer(haystack))
    assert base is not None
    if haystack.find(b"\0", start) < 0:  # text: strstr stops at the NUL after the end
        at = c.strstr(base + start, needle)
    else:
        at = c.memmem(base + start, len(haystack) - start, needle, len(needle))
    return -1 if at is None else at - base
