"""Make this Linux CPython look like Windows or macOS to trio-echo, for the platform tests.

Put this folder on PYTHONPATH and set TRIO_ECHO_SIMULATE=windows or macos: Python runs this
file at start-up (site.py imports `sitecustomize`), before any program's code. It takes away
or changes what that OS lacks or does differently, in the places our code looks for it: the
modules, functions, constants, errno numbers and limits. trio is imported first and keeps
its real (epoll) backend, as trio itself would pick its own on the real OS; what trio does
inside stays Linux's, what our code can see is the simulated OS's.

Windows: no `resource`, `fcntl`, `termios`, `pwd`, `grp`; no `os.uname`, `os.readv`,
`os.preadv`, `os.pwritev`, `RWF_*`; `os.read`, `os.write`, `os.fstat` and `os.dup` on a
socket fail with EBADF (a SOCKET is no C-runtime descriptor); no `socket.recvmsg`,
`sendmsg`, `SO_REUSEPORT`, `MSG_TRUNC`; `ctypes.CDLL(None)` raises TypeError;
`signal.SIGBREAK` (21, Windows's number) and no SIGHUP, SIGUSR1/2, alarm, pthread_*;
errno's WSA names and numbers, with connection errors raised as Windows raises them
(ConnectionRefusedError errno 10061...) and a UDP receive after an ICMP port unreachable
failing with WSAECONNRESET (10054); IP_DONTFRAGMENT (14) and IP_MTU (73) as Windows numbers
them; `sys.getwindowsversion` and `ctypes.windll.kernel32.GetUserDefaultUILanguage`, whose
answer is TRIO_ECHO_SIMULATE_UI_LANGUAGE (a LANGID, default 0x0409, English).

macOS: `os.uname().sysname` is Darwin; no /proc; no `RWF_*`, `os.preadv`, `os.pwritev`;
RLIMIT_NOFILE is soft 256, hard RLIM_INFINITY, and setrlimit refuses a soft limit above
OPEN_MAX (10240) as macOS does (the real soft limit is set to what it says); IP_PKTINFO is
26 and IP_DONTFRAG 28, as macOS numbers them.

Both: /proc is hidden (open, stat, listdir and scandir of it: ENOENT).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

SIMULATED = os.environ.get("TRIO_ECHO_SIMULATE", "")


def _hide_proc() -> None:
    import builtins
    import errno
    import io

    def hidden(path: Any) -> bool:
        if isinstance(path, int):
            return False
        try:
            name = os.fsdecode(os.fspath(path))
        except TypeError:
            return False
        return name == "/proc" or name.startswith("/proc/")

    def guard(real: Callable[..., Any]) -> Callable[..., Any]:
        def call(path: Any, *args: Any, **kwargs: Any) -> Any:
            if hidden(path):
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
            return real(path, *args, **kwargs)

        return call

    builtins.open = io.open = guard(io.open)
    for name in ("open", "stat", "lstat", "listdir", "scandir", "access"):
        setattr(os, name, guard(getattr(os, name)))


def _remove(module: object, *names: str) -> None:
    for name in names:
        if hasattr(module, name):
            delattr(module, name)


class _Missing:
    """A class attribute that is not there (hasattr says False), for methods of C types'
    Python subclasses (socket.socket.recvmsg)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __get__(self, instance: object, owner: type | None = None) -> object:
        raise AttributeError(self._name)


def _translate_ip_options(mapping: dict[int, int], cmsg: dict[int, int]) -> None:
    """setsockopt/getsockopt at IPPROTO_IP with the simulated OS's numbers, and ancillary
    data with its types."""
    import socket

    real_set = socket.socket.setsockopt
    real_get = socket.socket.getsockopt

    def setsockopt(self, level, option, value, *rest):  # type: ignore[no-untyped-def]
        if level == socket.IPPROTO_IP and option in mapping:
            option = mapping[option]
            if option == 10:  # IP_MTU_DISCOVER takes DO (2) where the others take 1
                value = 2 if value else 0
        return real_set(self, level, option, value, *rest)

    def getsockopt(self, level, option, *rest):  # type: ignore[no-untyped-def]
        if level == socket.IPPROTO_IP and option in mapping:
            option = mapping[option]
        return real_get(self, level, option, *rest)

    socket.socket.setsockopt = setsockopt  # type: ignore[method-assign]
    socket.socket.getsockopt = getsockopt  # type: ignore[method-assign]
    if cmsg and hasattr(socket.socket, "recvmsg"):
        real_recvmsg = socket.socket.recvmsg
        back = {linux: simulated for simulated, linux in cmsg.items()}

        def recvmsg(self, *args):  # type: ignore[no-untyped-def]
            data, ancillary, flags, address = real_recvmsg(self, *args)
            ancillary = [
                (lvl, back.get(kind, kind) if lvl == socket.IPPROTO_IP else kind, value)
                for lvl, kind, value in ancillary
            ]
            return data, ancillary, flags, address

        socket.socket.recvmsg = recvmsg  # type: ignore[method-assign]


def _macos() -> None:
    import resource

    open_max = 10240
    real_get, real_set = resource.getrlimit, resource.setrlimit
    soft, hard = real_get(resource.RLIMIT_NOFILE)
    if soft > 256:
        real_set(resource.RLIMIT_NOFILE, (256, hard))

    def getrlimit(which: int) -> tuple[int, int]:
        if which == resource.RLIMIT_NOFILE:
            return real_get(which)[0], resource.RLIM_INFINITY
        return real_get(which)

    def setrlimit(which: int, limits: tuple[int, int]) -> None:
        if which != resource.RLIMIT_NOFILE:
            return real_set(which, limits)
        wanted, _hard = limits
        if wanted == resource.RLIM_INFINITY or wanted > open_max:
            raise ValueError("current limit exceeds maximum limit")  # EINVAL, as on macOS
        return real_set(which, (wanted, real_get(which)[1]))

    resource.getrlimit = getrlimit
    resource.setrlimit = setrlimit
    real_uname = os.uname

    def uname() -> os.uname_result:
        real = real_uname()
        return os.uname_result(("Darwin", real.nodename, "23.6.0", "Darwin Kernel", "arm64"))

    os.uname = uname
    _remove(os, "preadv", "pwritev", *[name for name in dir(os) if name.startswith("RWF_")])
    _translate_ip_options({26: 8, 28: 10}, {26: 8})  # IP_PKTINFO, IP_DONTFRAG


def _windows() -> None:
    import ctypes
    import errno
    import signal
    import socket
    import stat
    import sys
    import types

    import trio

    for name in ("resource", "fcntl", "termios", "tty", "pty", "pwd", "grp", "syslog"):
        sys.modules[name] = None  # type: ignore[assignment]  # import raises ImportError
    _remove(os, "uname", "readv", "writev", "preadv", "pwritev")
    _remove(os, *[name for name in dir(os) if name.startswith("RWF_")])

    real_fstat = os.fstat

    def is_socket(fd: int) -> bool:
        try:
            return stat.S_ISSOCK(real_fstat(fd).st_mode)
        except OSError:
            return False

    def not_for_sockets(real: Callable[..., Any]) -> Callable[..., Any]:
        def call(fd: Any, *args: Any) -> Any:
            if isinstance(fd, int) and is_socket(fd):
                raise OSError(errno.EBADF, "Bad file descriptor")
            return real(fd, *args)

        return call

    for name in ("read", "write", "fstat", "dup"):
        setattr(os, name, not_for_sockets(getattr(os, name)))

    for name in ("recvmsg", "sendmsg", "recvmsg_into"):
        setattr(socket.socket, name, _Missing(name))
    # AF_UNIX stays: trio's own wake-up socketpair (its Linux backend) needs it.
    _remove(socket, "SO_REUSEPORT", "MSG_TRUNC", "MSG_DONTWAIT", "IPV6_RECVPKTINFO")

    real_cdll_init = ctypes.CDLL.__init__

    def cdll_init(self, name, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name is None:
            raise TypeError("LoadLibrary() argument 1 must be str, not None")
        real_cdll_init(self, name, *args, **kwargs)

    ctypes.CDLL.__init__ = cdll_init  # type: ignore[method-assign]
    ui_language = int(os.environ.get("TRIO_ECHO_SIMULATE_UI_LANGUAGE", "0x0409"), 0)
    kernel32 = types.SimpleNamespace(GetUserDefaultUILanguage=lambda: ui_language)
    ctypes.windll = types.SimpleNamespace(kernel32=kernel32)  # type: ignore[attr-defined]
    sys.getwindowsversion = lambda: (10, 0, 19045, 2, "")  # type: ignore[attr-defined]

    signal.SIGBREAK = 21  # type: ignore[attr-defined]  # Windows's number for Ctrl-Break
    signal.CTRL_C_EVENT, signal.CTRL_BREAK_EVENT = 0, 1  # type: ignore[attr-defined]
    _remove(signal, "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGQUIT", "SIGALRM", "SIGTSTP", "SIGCHLD")
    _remove(signal, "alarm", "pause", "setitimer", "getitimer", "siginterrupt", "pthread_kill")

    wsa = {
        errno.ECONNREFUSED: (10061, "WSAECONNREFUSED", ConnectionRefusedError,
                             "No connection could be made because the target machine actively "
                             "refused it"),
        errno.ECONNRESET: (10054, "WSAECONNRESET", ConnectionResetError,
                           "An existing connection was forcibly closed by the remote host"),
        errno.ETIMEDOUT: (10060, "WSAETIMEDOUT", TimeoutError,
                          "A connection attempt failed because the connected party did not "
                          "properly respond after a period of time"),
        errno.EHOSTUNREACH: (10065, "WSAEHOSTUNREACH", OSError,
                             "A socket operation was attempted to an unreachable host"),
        errno.ENETUNREACH: (10051, "WSAENETUNREACH", OSError,
                            "A socket operation was attempted to an unreachable network"),
        errno.EMSGSIZE: (10040, "WSAEMSGSIZE", OSError,
                         "A message sent on a datagram socket was larger than the internal "
                         "message buffer"),
    }  # fmt: skip
    for number, name, _cls, _text in wsa.values():
        setattr(errno, name, number)
        errno.errorcode[number] = name  # type: ignore[index]

    def as_windows(exc: OSError, linux_errno: int | None = None) -> OSError:
        number, _name, cls, text = wsa[linux_errno or exc.errno or 0]
        return cls(number, text)

    # trio's socket class binds the standard library's methods when it is imported: the
    # simulated ones are put into it too.
    trio_socket = trio._socket._SocketType
    real_connect = trio_socket.connect

    async def connect(self, address):  # type: ignore[no-untyped-def]
        try:
            return await real_connect(self, address)
        except OSError as exc:
            if exc.errno in wsa:
                raise as_windows(exc) from None
            raise

    trio_socket.connect = connect  # type: ignore[method-assign]

    # A UDP receive after an ICMP port unreachable: WSAECONNRESET, connected or not. Linux
    # tells an unconnected socket only with IP_RECVERR, asked for here at bind.
    real_bind = socket.socket.bind

    def bind(self, address):  # type: ignore[no-untyped-def]
        if self.type == socket.SOCK_DGRAM and self.family == socket.AF_INET:
            socket.socket.setsockopt(self, socket.IPPROTO_IP, 11, 1)  # IP_RECVERR
        return real_bind(self, address)

    socket.socket.bind = bind  # type: ignore[method-assign]
    for name in ("recv", "recvfrom", "recv_into", "recvfrom_into"):
        real = getattr(socket.socket, name)

        def receive(self, *args, _real=real):  # type: ignore[no-untyped-def]
            try:
                return _real(self, *args)
            except ConnectionRefusedError as exc:
                if self.type == socket.SOCK_DGRAM:
                    raise as_windows(exc, errno.ECONNRESET) from None
                raise
            except OSError as exc:
                if exc.errno in wsa and exc.errno != errno.EAGAIN:
                    raise as_windows(exc) from None
                raise

        setattr(socket.socket, name, receive)
        wrapper = trio._socket._make_simple_sock_method_wrapper
        setattr(trio_socket, name, wrapper(receive, trio.lowlevel.wait_readable))
    _translate_ip_options({14: 10, 73: 14}, {})  # IP_DONTFRAGMENT, IP_MTU


if SIMULATED in ("windows", "macos"):
    import trio  # noqa: F401  # first, with all it needs: it keeps its real backend

    _hide_proc()
    _macos() if SIMULATED == "macos" else _windows()
