"""The pytest plugin, as another project uses it: a test file of a "foreign" project run by
pytest's own `pytester`, with both fixtures, a marker, and a failing assertion."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

FOREIGN = """
import socket

import pytest
import trio

from trio_echo.events import Disconnected


@pytest.mark.trio
async def test_a_trio_test(echo_server):
    stream = await trio.open_tcp_stream(*echo_server.address)
    await stream.send_all(b"hello\\n")
    assert await stream.receive_some(100) == b"hello\\n"
    await stream.aclose()
    [end] = await echo_server.wait_for(Disconnected)
    assert end.bytes_in == 6


def test_a_plain_socket_test(echo_server_sync):
    with socket.create_connection(echo_server_sync.address) as sock:
        sock.sendall(b"plain\\n")
        assert sock.recv(100) == b"plain\\n"


@pytest.mark.echo_server(exit_command=False)
def test_options_by_marker(echo_server_sync):
    assert echo_server_sync.server.config.exit_command is False
    with socket.create_connection(echo_server_sync.address) as sock:
        sock.sendall(b"exit\\n")
        assert sock.recv(100) == b"exit\\n"
        sock.sendall(b"still open\\n")
        assert sock.recv(100) == b"still open\\n"


@pytest.mark.trio
async def test_the_factory(echo_server_factory):
    async with echo_server_factory(chunk_size=3) as small:
        assert small.server.config.chunk_size == 3


def test_a_failing_assertion(echo_server_sync):
    assert echo_server_sync.port == -1
"""


def test_a_foreign_project_uses_both_fixtures_and_a_failure_is_a_failure(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_foreign=FOREIGN)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4, failed=1, errors=0)
    result.stdout.fnmatch_lines(["*test_a_failing_assertion*", "*assert * == -1*"])
