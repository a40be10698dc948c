"""The real programs under simulated Windows and macOS (`tests/simulated/sitecustomize.py`).

No Windows or macOS machine exists here: each program runs as a subprocess of a CPython
made to lack what that OS lacks (modules, calls, constants, limits, errno numbers), with trio
keeping its real backend. The simulation is first shown sound (the trio tutorial's server
runs under it, and it does take those things away); then every core path: the server starts
with the platform's default limits, echoes Cyrillic, binary and `exit`, stops on Ctrl-C (and
on Windows Ctrl-Break) with status 0; the client pipes a file byte-exact and ends on `exit`;
the check passes and diagnoses a refused port; TLS and UDP; `--workers`; the pytest plugin;
Russian, from `--lang` and from the Windows UI language. Nothing may print a traceback.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from tests.processes import CHECK, CLIENT, PATIENCE, SERVER, free_port, reading, server_process

SIMULATION = Path(__file__).parent / "simulated"
PLATFORMS = ["windows", "macos"]
SIGBREAK = 21  # Windows's number, which the simulation gives signal.SIGBREAK

pytestmark = pytest.mark.parametrize("platform", PLATFORMS)


def simulated(platform: str, **extra: str) -> dict[str, str]:
    """The environment of a program run on the simulated `platform`."""
    env = dict(os.environ, TRIO_ECHO_SIMULATE=platform, **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(SIMULATION), *sys.path])
    return env


def no_traceback(*outputs: bytes | str) -> None:
    for output in outputs:
        text = output.decode(errors="replace") if isinstance(output, bytes) else output
        assert "Traceback" not in text, text


async def run(
    argv: list[str], platform: str, stdin: bytes = b"", extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(4 * PATIENCE):
        done = await trio.run_process(
            argv,
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=simulated(platform, **(extra or {})),
        )
    no_traceback(done.stdout, done.stderr)
    return done


async def echo(port: int, data: bytes) -> bytes:
    """`data` sent on a plain TCP connection (half-closed after it), and all that came back."""
    with trio.fail_after(PATIENCE):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(data)
            await stream.send_eof()
            back = b""
            while chunk := await stream.receive_some(65536):
                back += chunk
    return back


TUTORIAL_SERVER = """
import sys
import trio

async def echo_server(server_stream):
    async for data in server_stream:
        await server_stream.send_all(data)

async def main():
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    print(listeners[0].socket.getsockname()[1], flush=True)
    await trio.serve_listeners(echo_server, listeners)

trio.run(main)
"""

SIMULATION_TOOK_AWAY = """
import ctypes, os, socket
from trio_echo import capabilities
facts = {
    "system": capabilities.system(),
    "sockets_are_descriptors": capabilities.sockets_are_descriptors(),
    "nowait_io": capabilities.nowait_io(),
    "c_search": capabilities.c_search() is not None,
    "balanced_reuse_port": capabilities.balanced_reuse_port(),
    "proc": os.path.exists("/proc/sys/fs/nr_open"),
}
try:
    import resource
    facts["nofile"] = list(resource.getrlimit(resource.RLIMIT_NOFILE))
    facts["infinity"] = resource.RLIM_INFINITY
except ImportError:
    facts["nofile"] = None
print(__import__("json").dumps(facts))
"""


async def test_the_simulation_runs_the_trio_tutorial_server(platform: str) -> None:
    """Sound: trio's own tutorial echo server works under it unchanged."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", TUTORIAL_SERVER],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=simulated(platform),
    )
    try:
        assert process.stdout is not None
        assert process.stderr is not None
        async with reading(process.stdout) as said, reading(process.stderr) as errors:
            port = int(await said.until(""))  # its first line: the port
            data = "привет, tutorial\n".encode() + bytes(range(256)) * 64
            assert await echo(port, data) == data
            process.kill()
            await process.wait()
            no_traceback("\n".join(await errors.rest()))
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()


async def test_the_simulation_takes_away_what_the_platform_lacks(platform: str) -> None:
    done = await run([sys.executable, "-c", SIMULATION_TOOK_AWAY], platform)
    facts = json.loads(done.stdout)
    assert facts["proc"] is False
    assert facts["nowait_io"] is False
    assert facts["balanced_reuse_port"] is False
    if platform == "windows":
        assert facts["system"] == "windows"
        assert facts["nofile"] is None
        assert facts["sockets_are_descriptors"] is False
        assert facts["c_search"] is False
    else:
        assert facts["system"] == "darwin"
        assert facts["nofile"] == [256, facts["infinity"]]
        assert facts["sockets_are_descriptors"] is True
        assert facts["c_search"] is True


def events(lines: list[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in lines if line.startswith("{")]


@pytest.mark.parametrize("stop", ["SIGINT", "other"])
async def test_the_server_starts_echoes_and_stops_on_its_platforms_keys(
    platform: str, stop: str
) -> None:
    """Stopped by Ctrl-C, or by the platform's other stop signal: Ctrl-Break on Windows,
    SIGTERM on macOS."""
    if stop == "other":
        stop = "SIGBREAK" if platform == "windows" else "SIGTERM"
    signums = {"SIGINT": signal.SIGINT, "SIGBREAK": SIGBREAK, "SIGTERM": signal.SIGTERM}
    async with server_process(env=simulated(platform)) as server:
        [start] = events(server.log.seen[:1])
        if platform == "windows":
            assert (start["fd_limit"], start["max_connections"]) == (None, 10240)
            assert start["stop_signals"] == ["SIGINT", "SIGBREAK"]
            assert "no descriptor limit on Windows" in str(start["message"])
        else:
            # Soft 256, hard infinite: raised to OPEN_MAX, the most macOS's setrlimit takes.
            assert start["fd_limit"] == 10240
            assert start["stop_signals"] == ["SIGINT", "SIGTERM"]
        assert start["system"] == {"windows": "windows", "macos": "darwin"}[platform]
        data = "привет, мир\n".encode() + bytes(range(256)) * 40 + b"\nexit\nnot echoed\n"
        assert await echo(server.port, data) == data[: data.index(b"exit\n") + 5]
        await server.log.until('"server.disconnected"')
        server.process.send_signal(signums[stop])
        lines = await server.log.rest()
        assert await server.process.wait() == 0
    no_traceback("\n".join(lines))
    seen = events(lines)
    [end] = [e for e in seen if e["event"] == "server.disconnected"]
    assert (end["reason"], end["bytes_out"]) == ("exit", data.index(b"exit\n") + 5)
    [stopping] = [e for e in seen if e["event"] == "server.stopping"]
    keys = {"SIGINT": "SIGINT (Ctrl-C)", "SIGBREAK": "SIGBREAK (Ctrl-Break)"}
    assert stopping["reason"] == stop  # a code; the words are the message's
    assert f"stopping on {keys.get(stop, stop)}" in str(stopping["message"])
    assert seen[-1]["event"] == "server.stopped"


async def test_the_client_pipes_a_file_byte_exact_and_ends_on_exit(
    platform: str, tmp_path: Path
) -> None:
    rng = random.Random(20)
    lines = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))) for _ in range(9000)]
    data = b"\n".join(line.replace(b"exit", b"EXIT") for line in lines) + "\nпока\n".encode()
    source, sink = tmp_path / "in", tmp_path / "out"
    source.write_bytes(data)
    async with server_process(env=simulated(platform)) as server:
        port = str(server.port)
        with source.open("rb") as stdin, sink.open("wb") as stdout:
            with trio.fail_after(4 * PATIENCE):
                piped = await trio.run_process(
                    [*CLIENT, "--port", port, "--quiet"], stdin=stdin, stdout=stdout,
                    capture_stderr=True, check=False, env=simulated(platform),
                )  # fmt: skip
        no_traceback(piped.stderr)
        assert piped.returncode == 0, piped.stderr
        assert sink.read_bytes() == data
        ended = await run([*CLIENT, "--port", port], platform, stdin=b"one\nexit\ntwo\n")
        assert (ended.returncode, ended.stdout) == (0, b"one\nexit\n")
        assert b"`exit`" in ended.stderr


async def test_the_check_passes_and_diagnoses_a_refused_port(platform: str) -> None:
    async with server_process(env=simulated(platform)) as server:
        passed = await run([*CHECK, "127.0.0.1", str(server.port), "--json"], platform)
        assert passed.returncode == 0, passed.stdout
    refused = await run([*CHECK, "127.0.0.1", str(free_port()), "--json"], platform)
    assert refused.returncode == 1
    report = json.loads(refused.stdout)
    [connect] = [probe for probe in report["probes"] if probe["name"] == "connect"]
    assert (connect["status"], connect["cause"]) == ("FAIL", "refused")
    assert "connection refused" in connect["diagnosis"]


async def test_tls_and_udp(platform: str) -> None:
    async with server_process("--tls", "--udp", env=simulated(platform)) as server:
        port = str(server.port)
        line = "зашифровано\n".encode()
        secured = await run(
            [*CLIENT, "--port", port, "--tls", "--tls-fingerprint", server.fingerprint],
            platform,
            stdin=line,
        )
        assert (secured.returncode, secured.stdout) == (0, line), secured.stderr
        datagrams = await run([*CLIENT, "--port", port, "--udp"], platform, stdin=b"a\nbb\n")
        assert (datagrams.returncode, datagrams.stdout) == (0, b"a\nbb\n"), datagrams.stderr
        udp_check = await run([*CHECK, "127.0.0.1", port, "--udp"], platform)
        assert udp_check.returncode == 0, udp_check.stdout
    refused = await run([*CLIENT, "--port", str(free_port()), "--udp"], platform, stdin=b"x\n")
    assert refused.returncode == 1
    assert b"nothing listens on that UDP port" in refused.stderr


async def test_workers_are_a_one_line_usage_error(platform: str) -> None:
    done = await run([*SERVER, "--port", "0", "--workers", "2"], platform)
    assert done.returncode == 2
    [error] = [line for line in done.stderr.decode().splitlines() if "error:" in line]
    name = {"windows": "Windows", "macos": "macOS"}[platform]
    assert "--workers 2" in error
    assert name in error
    assert "SO_REUSEPORT" in error


PLUGIN_USER = """
import socket


def test_the_fixture_serves(echo_server_sync):
    with socket.create_connection(echo_server_sync.address) as sock:
        sock.sendall(b"plugin\\n")
        assert sock.recv(100) == b"plugin\\n"
"""


async def test_the_pytest_plugin_loads(platform: str, tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(PLUGIN_USER)
    done = await run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        platform,
    )
    assert done.returncode == 0, done.stdout
    assert b"1 passed" in done.stdout


async def test_russian_from_lang_and_from_the_windows_ui_language(platform: str) -> None:
    asked = await run([*SERVER, "--lang", "ru", "--workers", "2"], platform)
    assert "ошибка" in asked.stderr.decode()
    # Without LANG and the like, Windows is asked for its own language (LANGID 0x0419: ru).
    bare = {name: "" for name in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")}
    russian_ui = {**bare, "TRIO_ECHO_SIMULATE_UI_LANGUAGE": "0x0419"}
    russian = await run([*SERVER, "--workers", "2"], platform, extra=russian_ui)
    english_ui = {**bare, "TRIO_ECHO_SIMULATE_UI_LANGUAGE": "0x0409"}
    english = await run([*SERVER, "--workers", "2"], platform, extra=english_ui)
    assert "error:" in english.stderr.decode()
    if platform == "windows":
        assert "ошибка" in russian.stderr.decode()
    else:  # macOS has no such call: English, as gettext chooses without a locale
        assert "error:" in russian.stderr.decode()


async def test_russian_help_into_a_pipe_whatever_the_code_page(platform: str) -> None:
    """Windows gives a redirected stream its ANSI code page (cp1252 has no Cyrillic): the
    help still arrives, in UTF-8."""
    done = await run(
        [*SERVER, "--lang", "ru", "--help"], platform, extra={"PYTHONIOENCODING": "cp1252"}
    )
    assert done.returncode == 0
    assert "показать" in done.stdout.decode("utf-8")
