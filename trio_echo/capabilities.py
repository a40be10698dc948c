"""What this platform allows: the one module that knows whether we run on Linux, macOS or
Windows, asked once at each boundary that chooses a fast path.

trio chooses its I/O backend once (epoll, kqueue or IOCP) and the rest of trio never asks
again; the same here. Each capability is named for what it allows and found by looking for
it (`hasattr`, `ImportError`, what the kernel calls itself), never by `sys.platform`, so that
a platform simulated by taking those things away (``tests/simulated``) takes the same
branches the real one would. Where a capability is missing, the portable path is built only
on trio's public streams and the standard library. Nothing outside this module imports a
POSIX-only module.

Setting ``TRIO_ECHO_PORTABLE=1`` in the environment turns every acceleration off, so that
the portable paths can be tested and measured on Linux too.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import stat
import sys
from collections.abc import Callable
from typing import Final, NamedTuple

PORTABLE: Final = os.environ.get("TRIO_ECHO_PORTABLE") == "1"

# macOS refuses a soft descriptor limit above OPEN_MAX (sys/syslimits.h) when the hard one is
# RLIM_INFINITY, as it is by default: setrlimit(2), COMPATIBILITY.
MACOS_OPEN_MAX: Final = 10240
# Sockets on Windows are handles, not C-runtime descriptors: no limit of the kind RLIMIT_NOFILE
# sets applies to them. The default `--max-connections` there, to keep memory bounded.
WINDOWS_CONNECTIONS: Final = 10240
# IPPROTO_IP's option that asks for each datagram's destination (struct in_pktinfo, the same
# layout on both): Python 3.11's socket module names it on neither.
_IP_PKTINFO: Final = {"linux": 8, "darwin": 26}


def system() -> str:
    """The kernel's own name for itself, lower case ("linux", "darwin", ...), or "windows"
    where there is no `os.uname` (Windows has none)."""
    uname = getattr(os, "uname", None)
    return "windows" if uname is None else str(uname().sysname).lower()


def platform_name() -> str:
    """The platform as people call it, for messages: Linux, macOS, Windows, or the kernel's
    name."""
    name = system()
    return {"linux": "Linux", "darwin": "macOS", "windows": "Windows"}.get(name, name)


# ---- sockets --------------------------------------------------------------------------------


def reuse_address_is_safe() -> bool:
    """Whether SO_REUSEADDR on a listener only lets it bind past connections in TIME_WAIT
    (POSIX), as trio uses it; on Windows it would let another process take the port."""
    return system() != "windows"


@functools.cache
def sockets_are_descriptors() -> bool:
    """Whether a socket's `fileno()` is a file descriptor that `os.read` and `os.write` take
    (every POSIX system; on Windows a socket is a handle the C runtime does not know): the
    server's plain TCP and TLS fast paths and the client's read-on need it."""
    if PORTABLE:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            return stat.S_ISSOCK(os.fstat(probe.fileno()).st_mode)
        except OSError:
            return False


def can_read_vectors() -> bool:
    """`os.readv` into a buffer of ours, on a socket (the client's read-on)."""
    return hasattr(os, "readv") and sockets_are_descriptors()


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity where the system has one (Linux:
    `taskset`, cgroups' cpusets), else every core."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def balanced_reuse_port() -> bool:
    """Whether processes that share a port with SO_REUSEPORT get its connections spread over
    them by the kernel (Linux 3.9 on; FreeBSD names it SO_REUSEPORT_LB). macOS has
    SO_REUSEPORT, but gives every connection to one of them; Windows has none."""
    if hasattr(socket, "SO_REUSEPORT_LB"):
        return True
    return hasattr(socket, "SO_REUSEPORT") and system() == "linux"


def ipv4_packet_info() -> int | None:
    """IP_PKTINFO's number here (the option that asks for each IPv4 datagram's destination,
    the ancillary data's type too), if datagrams can be received with it (`recvmsg`); None
    where they cannot (Windows has no `recvmsg`)."""
    if PORTABLE or not hasattr(socket.socket, "recvmsg"):
        return None
    option: int | None = getattr(socket, "IP_PKTINFO", None) or _IP_PKTINFO.get(system())
    return option


def ipv6_packet_info() -> bool:
    """Whether IPv6 datagrams can be received with their destination."""
    return (
        not PORTABLE
        and hasattr(socket.socket, "recvmsg")
        and hasattr(socket, "IPV6_RECVPKTINFO")
        and hasattr(socket, "IPV6_PKTINFO")
    )


class DontFragment(NamedTuple):
    """How to set and clear IPv4's don't-fragment bit on a socket, and read the route's MTU."""

    option: int  # at IPPROTO_IP
    on: int
    off: int
    mtu: int | None  # the option that reads the route's MTU, where there is one


# Each platform's own numbers (Python 3.11's socket module names none of them): Linux's
# IP_MTU_DISCOVER with IP_PMTUDISC_DO/DONT and IP_MTU; macOS's IP_DONTFRAG; Windows's
# IP_DONTFRAGMENT and IP_MTU.
_DONT_FRAGMENT: Final = {
    "linux": DontFragment(10, 2, 0, 14),
    "darwin": DontFragment(28, 1, 0, None),
    "windows": DontFragment(14, 1, 0, 73),
}


def dont_fragment() -> DontFragment | None:
    """The don't-fragment option here (the UDP check's path MTU probe), or None."""
    return _DONT_FRAGMENT.get(system())


# ---- standard input and output ----------------------------------------------------------------


def nowait_io() -> bool:
    """Whether a read or write can ask the kernel not to block for this one call
    (`RWF_NOWAIT`, Linux 4.14 on), leaving the file's own blocking mode alone."""
    return (
        not PORTABLE
        and hasattr(os, "RWF_NOWAIT")
        and hasattr(os, "preadv")
        and hasattr(os, "pwritev")
    )


# ---- the C library's search -------------------------------------------------------------------


class CSearch(NamedTuple):
    memmem: Callable[[int, int, bytes, int], int | None]
    strstr: Callable[[int, bytes], int | None]


@functools.cache
def c_search() -> CSearch | None:
    """The C library's memmem and strstr, looked up once (None where there is no C library
    to load by name: Windows, where `ctypes.CDLL(None)` is a TypeError, or no memmem)."""
    if PORTABLE:
        return None
    import ctypes  # trio has imported it already: no start-up cost

    try:
        library = ctypes.CDLL(None)
        memmem, strstr = library.memmem, library.strstr
    except (OSError, AttributeError, TypeError):
        return None
    memmem.restype = strstr.restype = ctypes.c_void_p
    memmem.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]
    strstr.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    return CSearch(memmem, strstr)


# ---- descriptors ------------------------------------------------------------------------------


def raise_descriptor_limit() -> int | None:
    """Raise the soft limit on open descriptors as far as it goes (as Go's runtime and HAProxy
    do: the soft limit is a default for programs that do not ask); the limit now, or None
    where sockets have no such limit (Windows).

    Linux: to the hard limit, or to `fs.nr_open` when that is infinite. macOS: to the hard
    limit, or when that is infinite (its default) to min(OPEN_MAX, kern.maxfilesperproc),
    the most setrlimit accepts. Windows: no such limit."""
    try:
        import resource
    except ImportError:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = _most_descriptors()
    if soft != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            real_hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]  # kept as it is
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, real_hard))
            soft = hard
    return int(hard if soft == resource.RLIM_INFINITY else min(soft, hard))


def _most_descriptors(nr_open_file: str = "/proc/sys/fs/nr_open") -> int:
    """The most descriptors a process may have when its hard limit says "infinite"."""
    try:
        with open(nr_open_file, encoding="ascii") as nr_open:  # Linux
            return int(nr_open.read())
    except (OSError, ValueError):
        pass
    per_process = _sysctl_int(b"kern.maxfilesperproc")  # macOS, the BSDs
    return MACOS_OPEN_MAX if per_process is None else min(MACOS_OPEN_MAX, per_process)


def _sysctl_int(name: bytes) -> int | None:
    """A numeric sysctl by name (sysctlbyname(3)), or None where there is none."""
    import ctypes

    try:
        sysctlbyname = ctypes.CDLL(None).sysctlbyname
    except (OSError, AttributeError, TypeError):
        return None
    value = ctypes.c_int(0)
    size = ctypes.c_size_t(ctypes.sizeof(value))
    if sysctlbyname(name, ctypes.byref(value), ctypes.byref(size), None, 0) != 0:
        return None
    return value.value


# ---- signals ----------------------------------------------------------------------------------


class StopSignal(NamedTuple):
    signum: int
    code: str  # how the START line and the stopping event name it: "SIGINT", "SIGBREAK"...


def stop_signals() -> tuple[StopSignal, ...]:
    """The signals that stop a server here: Ctrl-C (SIGINT) everywhere; SIGTERM where a
    process manager can send it (POSIX); Ctrl-Break (SIGBREAK) in a Windows console, where
    nothing sends SIGTERM."""
    found = [StopSignal(signal.SIGINT, "SIGINT")]
    sigbreak = getattr(signal, "SIGBREAK", None)
    if sigbreak is not None:
        found.append(StopSignal(sigbreak, "SIGBREAK"))
    else:
        found.append(StopSignal(signal.SIGTERM, "SIGTERM"))
    return tuple(found)


def signal_code(signum: int) -> str:
    """A stop signal's code ("SIGINT", "SIGBREAK", ...), by this platform's numbers."""
    for known in stop_signals():
        if known.signum == signum:
            return known.code
    with contextlib.suppress(ValueError):
        return signal.Signals(signum).name
    return f"signal {signum}"


# ---- the console ------------------------------------------------------------------------------


def speak_utf8() -> None:
    """Have `print` (help, usage errors, the check's table) write UTF-8 to a pipe or a file
    too. A console already takes any text (PEP 528); but Windows gives a redirected stream
    the ANSI code page (cp1252 cannot encode Cyrillic: a traceback for `--lang ru --help >
    file`), and a POSIX C locale gives ASCII. What a pipe gets is then the same bytes on
    every platform."""
    for stream in (sys.stdout, sys.stderr):
        encoding = str(getattr(stream, "encoding", "") or "").lower().replace("_", "-")
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None and encoding not in ("utf-8", "utf8"):
            with contextlib.suppress(ValueError, OSError):
                reconfigure(encoding="utf-8", errors="backslashreplace")


def end_of_input_keys() -> str:
    """What a person presses to end a terminal's input here."""
    return "Ctrl-Z, Enter" if system() == "windows" else "Ctrl-D"


def windows_ui_language() -> str | None:
    """The language of Windows' own user interface, as an ISO 639 code ("ru", "en"...), or
    None where there is no Windows (`sys.getwindowsversion`, `ctypes.windll`) to ask. People
    on Windows rarely have LANG set: this is what the rest of their system speaks."""
    if not hasattr(sys, "getwindowsversion"):
        return None  # not Windows, and ctypes need not be imported to know it
    import ctypes

    windll = getattr(ctypes, "windll", None)
    if windll is None:
        return None
    try:
        langid = int(windll.kernel32.GetUserDefaultUILanguage())
    except (OSError, AttributeError):
        return None
    # The low 10 bits are the primary language (winnt.h, PRIMARYLANGID).
    return {0x09: "en", 0x19: "ru"}.get(langid & 0x3FF)
