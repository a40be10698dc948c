"""The client's UDP mode, as a user runs it: datagrams cut from lines, echoes in order, loss,
duplicates and late echoes counted, nothing listening reported at once; `--workers` with UDP."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from tests.processes import PATIENCE, SERVER, run_client, server_process
from tests.streams import split
from trio_echo.udp_client import DatagramCutter


@given(
    data=st.binary(max_size=600) | st.lists(st.sampled_from([b"ab", b"\n", b"xyz"])).map(b"".join),
    size=st.integers(min_value=1, max_value=40),
    cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=8),
)
def test_datagrams_are_lines_cut_at_the_size_however_the_input_comes(
    data: bytes, size: int, cuts: list[int]
) -> None:
    whole = DatagramCutter(size)
    expected = whole.feed(data) + whole.end()
    pieces = DatagramCutter(size)
    got = [d for piece in split(data, cuts) for d in pieces.feed(piece)] + pieces.end()
    assert got == expected
    assert b"".join(got) == data
    for datagram in got[:-1]:
        assert datagram.endswith(b"\n") or len(datagram) == size
    assert all(0 < len(datagram) <= size for datagram in got)
    assert all(b"\n" not in datagram[:-1] for datagram in got)  # one line at most


def events_of(stderr: bytes) -> list[dict[str, object]]:
    return [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]


async def test_lines_and_binary_go_out_as_datagrams_and_come_back_in_order() -> None:
    payload = b"hello\nworld\nexit\n" + os.urandom(5000)
    async with server_process("--udp", "--no-tcp", "--quiet") as server:
        result = await run_client(
            "--udp", "--port", str(server.port), "--log-format", "json", stdin=payload
        )
    assert (result.returncode, result.stdout) == (0, payload)
    end = events_of(result.stderr)[-1]
    assert (end["reason"], end["lost"], end["sent"]) == ("echoed", 0, end["echoed"])
    sent = [e for e in events_of(result.stderr) if e["event"] == "client.datagram_sent"]
    assert [e["bytes"] for e in sent][:3] == [6, 6, 5]  # a line each, `exit` included
    assert all(int(str(e["bytes"])) <= 1024 for e in sent)


async def test_nothing_listening_is_refused_at_once_not_timed_out() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    # With a minute to wait for each echo, only ICMP's answer can end it within the bound.
    with trio.fail_after(PATIENCE):
        result = await run_client(
            "--udp", "--port", str(port), "--udp-timeout", "60", "--udp-retries", "0",
            stdin=b"anyone?\n",
        )  # fmt: skip
    assert result.returncode == 1
    said = result.stderr.decode()
    assert "connection refused by 127.0.0.1:" in said
    assert "nothing listens on that UDP port" in said
    assert "Traceback" not in said


@asynccontextmanager
async def odd_udp_server(answer: Callable[[list[bytes], bytes], list[bytes]]) -> AsyncIterator[int]:
    """A UDP 'echo' that answers each datagram with `answer(seen_before, datagram)`."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))
    seen: list[bytes] = []

    async def serve() -> None:
        while True:
            data, peer = await sock.recvfrom(65536)
            for reply in answer(seen, data):
                await sock.sendto(reply, peer)
            seen.append(data)

    with sock:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            yield sock.getsockname()[1]
            nursery.cancel_scope.cancel()


def every_other(seen: list[bytes], data: bytes) -> list[bytes]:
    return [data] if len(seen) % 2 == 0 else []


def twice(seen: list[bytes], data: bytes) -> list[bytes]:
    return [data, data]


def first_one_late(seen: list[bytes], data: bytes) -> list[bytes]:
    """Holds the first datagram until the second arrives (and ignores its resends)."""
    if not seen:
        return []
    if data == seen[0]:
        return []
    return [seen[0], data] if seen.count(seen[0]) == len(seen) else [data]


@pytest.mark.parametrize(
    ("answer", "counts", "status"),
    [
        (every_other, {"echoed": 2, "lost": 2, "duplicated": 0, "reordered": 0}, 1),
        (twice, {"echoed": 4, "lost": 0, "duplicated": 3, "reordered": 0}, 0),
        (first_one_late, {"echoed": 3, "lost": 1, "duplicated": 0, "reordered": 1}, 1),
    ],
    ids=["loses some", "duplicates", "late"],
)
async def test_loss_duplicates_and_late_echoes_are_counted(
    answer: Callable[[list[bytes], bytes], list[bytes]], counts: dict[str, int], status: int
) -> None:
    async with odd_udp_server(answer) as port:
        result = await run_client(
            "--udp", "--port", str(port), "--udp-timeout", "0.3", "--udp-retries", "0",
            "--log-format", "json", stdin=b"one\ntwo\nthree\nfour\n",
        )  # fmt: skip
    end = events_of(result.stderr)[-1]
    assert {key: end[key] for key in counts} == counts
    assert end["sent"] == 4
    assert result.returncode == status
    # Only echoes of the datagram awaited reach stdout, in input order.
    lines = result.stdout.splitlines(keepends=True)
    assert lines == sorted(lines, key=[b"one\n", b"two\n", b"three\n", b"four\n"].index)


async def test_udp_with_workers() -> None:
    async with server_process("--udp", "--workers", "2", "--quiet") as server:
        for _ in range(3):
            result = await run_client("--udp", "--port", str(server.port), stdin=b"shared\n")
            assert (result.returncode, result.stdout) == (0, b"shared\n")


@pytest.mark.parametrize(
    ("program", "args", "words"),
    [
        ("client", ["--udp", "--tls"], "--tls and --send-proxy are for TCP"),
        ("server", ["--no-tcp"], "--no-tcp needs --udp"),
        ("server", ["--udp", "--no-tcp", "--tls"], "--tls is for TCP"),
    ],
)
async def test_udp_option_mistakes(program: str, args: list[str], words: str) -> None:
    if program == "client":
        result = await run_client(*args)
    else:
        result = await trio.run_process(
            [*SERVER, "--port", "0", *args], capture_stderr=True, check=False
        )
    assert result.returncode == 2
    assert words in result.stderr.decode()
