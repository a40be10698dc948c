"""What both command lines share: option types, log options, and turning failures into
one clear line and an exit status (never a traceback)."""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from typing import Final, Literal, NoReturn, TypeVar

import trio

from trio_echo import __version__, i18n
from trio_echo.eventlog import EventLog, open_event_log
from trio_echo.i18n import N_, _
from trio_echo.rendering import LOG_FORMATS

_N = TypeVar("_N", int, float)

EXIT_FAILURE: Final = 1
# Here rather than in `tls`, which a plain TCP client does not import (start-up time).
DEFAULT_HANDSHAKE_TIMEOUT: Final = 10.0
EXIT_INTERRUPTED: Final = 130


class Fatal(Exception):
    """A failure to report as one line, without a traceback."""


class HelpFormatter(argparse.HelpFormatter):
    """Each default said once: `(default: X)` only where there is a value to say and the
    help does not say it already; never `(default: None)`, `True` or `False`."""

    def add_usage(self, usage: str | None, actions: Iterable[argparse.Action],
                  groups: Iterable[argparse._MutuallyExclusiveGroup],
                  prefix: str | None = None) -> None:  # fmt: skip
        super().add_usage(usage, actions, groups, _("usage: ") if prefix is None else prefix)

    def start_section(self, heading: str | None) -> None:
        super().start_section(None if heading is None else _(heading))

    def _format_text(self, text: str) -> str:
        return super()._format_text(_(text))

    def _get_help_string(self, action: argparse.Action) -> str | None:
        # Help texts are marked N_() where they are written and translated here, once.
        text = _(action.help) if action.help else ""
        default = action.default
        if (
            "default" in text
            or default is None
            or isinstance(default, bool)
            or default is argparse.SUPPRESS
            or action.option_strings == []
            or default == []
        ):
            return text
        return _("{help} (default: %(default)s)").format(help=text)


class Parser(argparse.ArgumentParser):
    """argparse with our words in the chosen language: its sections, `-h` and `error:`
    (the messages argparse makes up itself stay English)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, _("{prog}: error: {message}\n").format(prog=self.prog, message=message))


# Section titles argparse writes, for the catalog (HelpFormatter.start_section says them).
_SECTIONS: Final = (N_("options"), N_("positional arguments"))


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A program's parser with the options every program has. Call `i18n.setup` first."""
    parser = Parser(prog=prog, description=description, formatter_class=HelpFormatter,
                    add_help=False)  # fmt: skip
    parser.add_argument("-h", "--help", action="help", help=N_("show this help and exit"))
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}",
                        help=N_("show the version and exit"))  # fmt: skip
    parser.add_argument(
        "--lang",
        choices=i18n.LANGUAGES,
        help=N_("the language of messages and help: en or ru (without it: LANGUAGE, LC_ALL, "
                "LC_MESSAGES, LANG)"),
    )  # fmt: skip
    return parser


def add_log_options(parser: argparse.ArgumentParser, *, quiet_help: str) -> None:
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help=N_("events on stderr as explained text lines or as JSON lines"),
    )
    parser.add_argument("--quiet", action="store_true", help=quiet_help)


def add_server_tls_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("TLS")
    group.add_argument(
        "--tls",
        action="store_true",
        help=N_(
            "the port speaks TLS (1.2 or later); without --tls-cert, with an ephemeral "
            "self-signed certificate made at start, whose fingerprint the `listening` event shows"
        ),
    )
    group.add_argument(
        "--tls-cert",
        metavar="FILE",
        help=N_("the server's certificate chain (PEM; may hold the key)"),
    )
    group.add_argument(
        "--tls-key", metavar="FILE", help=N_("its private key (PEM), if not in --tls-cert")
    )
    group.add_argument(
        "--tls-client-ca",
        metavar="FILE",
        help=N_("mutual TLS: clients must present a certificate signed by this CA (PEM)"),
    )
    group.add_argument(
        "--tls-handshake-timeout",
        type=positive_float,
        default=DEFAULT_HANDSHAKE_TIMEOUT,
        help=N_("seconds a client has to complete its TLS handshake"),
    )


def check_tls_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The TLS options other than --tls mean nothing without it: say so, not ignore them."""
    given = [
        "--" + name.replace("_", "-")
        for name, value in vars(args).items()
        if name.startswith("tls_") and value not in (None, False) and not name.endswith("timeout")
    ]
    if given and not args.tls:
        parser.error(_("{value} need --tls").format(value=", ".join(given)))


def open_log(
    args: argparse.Namespace, worker: int | None = None
) -> AbstractAsyncContextManager[EventLog]:
    """The event log on stderr, as the options say (its `emit` never blocks)."""
    return open_event_log(args.log_format, worker=worker)


def _number(
    kind: Callable[[str], _N], what: str, low: _N, high: _N | None = None
) -> Callable[[str], _N]:
    def convert(text: str) -> _N:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                _("{text!r} is not {what}").format(text=text, what=_(what))
            ) from None
        if value < low or (high is not None and value > high) or value != value:
            raise argparse.ArgumentTypeError(
                _("{text!r} is not {what}").format(text=text, what=_(what))
            )
        return value

    convert.__name__ = what  # argparse names the type in its messages
    return convert


port_number = _number(int, N_("a port number (0 to 65535)"), 0, 65535)
positive_int = _number(int, N_("a whole number of at least 1"), 1)
MAX_CHUNK_SIZE: Final = 1 << 24  # a read's buffer is allocated whole: 16 MiB at most
chunk_size = _number(int, N_("a number of bytes from 1 to 16777216 (16 MiB)"), 1, MAX_CHUNK_SIZE)
non_negative_float = _number(float, N_("a number of seconds (0 or more)"), 0.0)
positive_float = _number(float, N_("a number of seconds (more than 0)"), 1e-9)


def _leaf(exc: BaseException) -> BaseException:
    """The one error inside nested single-member exception groups (trio's nurseries)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def describe(exc: BaseException) -> str:
    """What went wrong, in one line: the innermost error of groups and wrapped causes."""
    exc = _leaf(exc)
    cause = _leaf(exc.__cause__) if exc.__cause__ is not None else exc
    return str(cause) or type(cause).__name__


ErrorKind = Literal["refused", "reset", "unreachable", "timed_out", "too_large", "no_resources"]

# What an OSError means, by its errno's name, the same on every platform: Windows numbers
# them differently (WSAECONNREFUSED is 10061 there, ECONNREFUSED 111 on Linux, 61 on macOS)
# and names them with a WSA prefix; a few classes say it too.
_KIND_OF_NAME: Final[dict[str, ErrorKind]] = {
    "ECONNREFUSED": "refused",
    "ECONNRESET": "reset",
    "EHOSTUNREACH": "unreachable",
    "ENETUNREACH": "unreachable",
    "ETIMEDOUT": "timed_out",
    "EMSGSIZE": "too_large",
    "EMFILE": "no_resources",
    "ENFILE": "no_resources",
    "ENOMEM": "no_resources",
    "ENOBUFS": "no_resources",
}
_KIND_OF_CLASS: Final[tuple[tuple[type[OSError], ErrorKind], ...]] = (
    (ConnectionRefusedError, "refused"),
    (ConnectionResetError, "reset"),
    (TimeoutError, "timed_out"),
)


def error_kinds(exc: BaseException) -> set[ErrorKind]:
    """What the OSErrors in an error (its causes, trio's groups) mean, on any platform."""
    found: set[ErrorKind] = set()
    stack: list[BaseException] = [exc]
    while stack:
        item = stack.pop()
        if isinstance(item, OSError):
            name = errno.errorcode.get(item.errno or 0, "")
            kind = _KIND_OF_NAME.get(name.removeprefix("WSA"))
            if kind is not None:
                found.add(kind)
            found.update(kind for cls, kind in _KIND_OF_CLASS if isinstance(item, cls))
        if isinstance(item, BaseExceptionGroup):
            stack.extend(item.exceptions)
        if item.__cause__ is not None:
            stack.append(item.__cause__)
    return found


# The system's errors, in the reader's language: the C library's own text (strerror) is
# English whatever --lang says. The rest keep it.
_OS_ERRORS: Final = {
    "ENOENT": N_("no such file or directory"),
    "EACCES": N_("permission denied"),
    "EPERM": N_("operation not permitted"),
    "EADDRINUSE": N_("address already in use"),
    "EADDRNOTAVAIL": N_("that address is not one of this machine's"),
    "ECONNREFUSED": N_("connection refused"),
    "ECONNRESET": N_("connection reset by the peer"),
    "ETIMEDOUT": N_("timed out"),
    "EHOSTUNREACH": N_("no route to the host"),
    "ENETUNREACH": N_("the network is unreachable"),
    "EMFILE": N_("too many open files"),
    "ENFILE": N_("too many open files in the system"),
    "EISDIR": N_("is a directory"),
    "ENOTDIR": N_("not a directory"),
    "ENOSPC": N_("no space left on the device"),
    "EPIPE": N_("broken pipe"),
}


def os_error_text(exc: OSError) -> str:
    """What the system said, in the reader's language where we know it, and the file it was
    about when it names one."""
    name = errno.errorcode.get(exc.errno or 0, "")
    text = _(_OS_ERRORS[name]) if name in _OS_ERRORS else exc.strerror or str(exc) or name
    if not text:
        text = type(exc).__name__
    if exc.filename is not None:
        text = f"{text}: {os.fsdecode(exc.filename)}"  # no words: nothing to translate
    return text


def run_async(fn: Callable[[], Awaitable[int | None]], prog: str, context: str) -> int:
    """Run `fn` under trio; return the exit status, printing one line on failure."""
    try:
        status = trio.run(fn)
    except BaseException as raised:
        exc = _leaf(raised)
        if isinstance(exc, KeyboardInterrupt):
            print(_("{prog}: interrupted").format(prog=prog), file=sys.stderr)
            return EXIT_INTERRUPTED
        if isinstance(exc, Fatal):
            print(_("{prog}: error: {message}").format(prog=prog, message=exc), file=sys.stderr)
            return EXIT_FAILURE
        if isinstance(exc, OSError):
            message = f"{_(context)}: {os_error_text(exc)}"
            print(_("{prog}: error: {message}").format(prog=prog, message=message), file=sys.stderr)
            return EXIT_FAILURE
        raise
    return 0 if status is None else status
