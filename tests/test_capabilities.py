"""What `capabilities` decides, and the portable paths it chooses, run here on Linux too: the
server's plain, TLS and UDP echo with sockets that are no descriptors and no packet info,
as on Windows;
descriptor limits as macOS sets them; OS errors judged the same by Windows's numbers."""

from __future__ import annotations

import errno
import os
import ssl
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.conftest import Recorder
from tests.test_tls import echo_over_tls, open_tls, pinned_context, tls_server
from tests.test_udp import answers, datagram_socket, udp_server
from trio_echo import capabilities, cli, server, tls, udp_client
from trio_echo.events import Disconnected, Stopped


@pytest.fixture
def portable(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The portable paths, as on Windows: sockets are no descriptors (`os.read` and
    `os.write` on one fail, as the C runtime's do there), no packet info; the list of the
    times anything asked about sockets."""
    used: list[str] = []

    def no_descriptors() -> bool:
        used.append("sockets_are_descriptors")
        return False

    def not_on_sockets(real: Callable[..., Any]) -> Callable[..., Any]:
        def call(fd: int, *args: Any) -> Any:
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                raise OSError(errno.EBADF, "Bad file descriptor")
            return real(fd, *args)

        return call

    monkeypatch.setattr(capabilities, "sockets_are_descriptors", no_descriptors)
    monkeypatch.setattr(capabilities, "ipv4_packet_info", lambda: None)
    monkeypatch.setattr(capabilities, "ipv6_packet_info", lambda: False)
    monkeypatch.setattr(os, "read", not_on_sockets(os.read))
    monkeypatch.setattr(os, "write", not_on_sockets(os.write))
    return used


async def test_the_portable_path_echoes_plain_tcp(portable: list[str]) -> None:
    recorder = Recorder()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            echo = server.EchoServer(server.ServerConfig(port=0), emit=recorder)
            await nursery.start(echo.run)
            stream = await trio.open_tcp_stream(*echo.addresses[0])
            data = "привет\n".encode() + os.urandom(300_000) + b"\nexit\nafter\n"
            got = b""
            async with trio.open_nursery() as pumps:  # a client that sends as it reads
                pumps.start_soon(stream.send_all, data)
                while chunk := await stream.receive_some(65536):
                    got += chunk
            assert got == data[: data.index(b"\nexit\n") + 6]
            [end] = await recorder.wait_for(Disconnected)
            assert end.reason == "exit"
            echo.stop()


async def test_the_portable_path_echoes_tls(portable: list[str]) -> None:
    recorder = Recorder()
    async with tls_server(recorder, tls.server_tls(host="127.0.0.1")) as echo:
        stream = await open_tls(echo, pinned_context(), name=None)
        payload = os.urandom(200_000)
        assert await echo_over_tls(stream, payload) == payload
    assert portable, "nothing asked whether sockets are descriptors"


@pytest.mark.usefixtures("portable")
async def test_the_portable_path_answers_udp_without_packet_info() -> None:
    recorder = Recorder()
    async with udp_server(recorder, tcp=False) as echo:
        [endpoint] = echo.udp_endpoints
        assert endpoint.tells_destination is False
        with datagram_socket() as sock:
            for n in range(5):
                await sock.sendto(b"datagram %d" % n, echo.udp_addresses[0])
            assert sorted(await answers(sock, 5)) == sorted(b"datagram %d" % n for n in range(5))
    [stopped] = recorder.of(Stopped)
    assert (stopped.datagrams_in, stopped.datagrams_out) == (5, 5)


def test_sockets_are_descriptors_here() -> None:
    """Linux: the fast paths are chosen (the portable one only when asked)."""
    assert capabilities.sockets_are_descriptors() is not capabilities.PORTABLE
    assert capabilities.system() == "linux"
    assert capabilities.balanced_reuse_port()


@pytest.mark.parametrize(("per_process", "most"), [(4096, 4096), (24576, 10240), (None, 10240)])
def test_macos_limit_is_open_max_or_maxfilesperproc_whichever_is_less(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, per_process: int | None, most: int
) -> None:
    monkeypatch.setattr(capabilities, "_sysctl_int", lambda name: per_process)
    assert capabilities._most_descriptors(str(tmp_path / "no-proc-here")) == most


def test_linux_limit_is_nr_open(tmp_path: Path) -> None:
    nr_open = tmp_path / "nr_open"
    nr_open.write_text("1048576\n")
    assert capabilities._most_descriptors(str(nr_open)) == 1048576


def windows_error(
    monkeypatch: pytest.MonkeyPatch, cls: type[OSError], number: int, name: str
) -> OSError:
    """An error as Windows raises it: its own number, named with WSA in errno."""
    monkeypatch.setitem(errno.errorcode, number, name)
    return cls(number, "as Windows says it")


def test_errors_mean_the_same_by_windows_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    refused = windows_error(monkeypatch, ConnectionRefusedError, 10061, "WSAECONNREFUSED")
    unreachable = windows_error(monkeypatch, OSError, 10065, "WSAEHOSTUNREACH")
    too_large = windows_error(monkeypatch, OSError, 10040, "WSAEMSGSIZE")
    no_buffers = windows_error(monkeypatch, OSError, 10055, "WSAENOBUFS")
    assert cli.error_kinds(refused) == {"refused"}
    assert cli.error_kinds(unreachable) == {"unreachable"}
    assert cli.error_kinds(too_large) == {"too_large"}
    assert cli.error_kinds(no_buffers) == {"no_resources"}
    grouped = ExceptionGroup("nursery", [trio.BrokenResourceError("x")])
    grouped.exceptions[0].__cause__ = unreachable
    assert cli.error_kinds(grouped) == {"unreachable"}
    # And by Linux's numbers, as ever.
    assert cli.error_kinds(OSError(errno.ECONNREFUSED, "refused")) == {"refused"}
    assert cli.error_kinds(ssl.SSLError("not an errno")) == set()


async def test_a_udp_port_unreachable_is_refused_on_every_platform() -> None:
    """Windows says WSAECONNRESET where POSIX says ECONNREFUSED."""

    class WindowsSocket:
        async def recv(self, size: int) -> bytes:
            raise ConnectionResetError(10054, "An existing connection was forcibly closed")

    with pytest.raises(ConnectionRefusedError):
        await udp_client.receive(WindowsSocket())  # type: ignore[arg-type]


def test_stop_signals_here_and_on_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    import signal

    assert [s.code for s in capabilities.stop_signals()] == ["SIGINT", "SIGTERM"]
    monkeypatch.setattr(signal, "SIGBREAK", 21, raising=False)
    assert [s.code for s in capabilities.stop_signals()] == ["SIGINT", "SIGBREAK"]
    assert capabilities.signal_code(21) == "SIGBREAK"


def test_a_dont_fragment_option_per_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, option in (("linux", 10), ("darwin", 28), ("windows", 14)):
        monkeypatch.setattr(capabilities, "system", lambda name=name: name)
        found = capabilities.dont_fragment()
        assert found is not None
        assert found.option == option
    monkeypatch.setattr(capabilities, "system", lambda: "plan9")
    assert capabilities.dont_fragment() is None


def test_the_wheel_is_pure_python_with_the_catalogs(tmp_path: Path) -> None:
    """One wheel for every platform (py3-none-any), the message catalogs inside."""
    import subprocess
    import sys
    import zipfile

    root = Path(__file__).resolve().parent.parent
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
         "-w", str(tmp_path), str(root)],
        check=True, capture_output=True,
    )  # fmt: skip
    [wheel] = tmp_path.glob("*.whl")
    assert wheel.name.endswith("-py3-none-any.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "trio_echo/locale/ru/LC_MESSAGES/trio_echo.mo" in names
    assert "trio_echo/capabilities.py" in names
    assert {"trio_echo/events.schema.json", "trio_echo/server/core.py"} <= names
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA")))
    for system in (b"Microsoft :: Windows", b"MacOS", b"POSIX :: Linux"):
        assert b"Operating System :: " + system in metadata
