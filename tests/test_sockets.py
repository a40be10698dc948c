"""The server in-process on real sockets: port 0, IPv4 and IPv6, exit, shutdown, resets."""

from __future__ import annotations

import os
import socket
import struct
from functools import partial

import pytest
import trio

import trio_echo
from tests.conftest import Recorder
from tests.streams import receive_all, send_until_blocked
from trio_echo.events import Connected, Disconnected, Listening, Stopped, Stopping
from trio_echo.server import EchoServer, ServerConfig


async def connect(server: EchoServer) -> trio.SocketStream:
    host, port = server.addresses[0]
    return await trio.open_tcp_stream(host, port)


async def exchange(stream: trio.SocketStream, payload: bytes) -> bytes:
    """Send everything and half-close while reading everything back, concurrently."""
    async with trio.open_nursery() as nursery:

        async def send() -> None:
            await stream.send_all(payload)
            await stream.send_eof()

        nursery.start_soon(send)
        return await receive_all(stream, [65536])


def ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        pytest.param(
            "::1", marks=pytest.mark.skipif(not ipv6_available(), reason="no IPv6 loopback")
        ),
    ],
)
async def test_port_zero_binds_a_real_port_and_echoes_a_binary_mebibyte(host: str) -> None:
    recorder = Recorder()
    payload = os.urandom(1 << 20)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(trio_echo.serve, ServerConfig(host=host, port=0), emit=recorder)
        )
        [(bound_host, port)] = server.addresses
        assert (bound_host, port != 0) == (host, True)
        [listening] = recorder.of(Listening)
        assert (listening.host, listening.port) == (host, port)
        async with await connect(server) as stream:
            assert await exchange(stream, payload) == payload
        server.stop()
    [end] = recorder.of(Disconnected)
    assert (end.reason, end.bytes_in, end.bytes_out) == ("eof", len(payload), len(payload))


@pytest.mark.skipif(not ipv6_available(), reason="no IPv6 loopback")
async def test_the_ipv6_wildcard_serves_ipv4_clients_too(recorder: Recorder) -> None:
    """`--host ::` is "IPv6 and IPv4", as the help says: one dual-stack socket (trio's own
    listeners are IPv6-only, issue 24, 14). Only loopback is connected to."""
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(trio_echo.serve, ServerConfig(host="::", port=0), emit=recorder)
        )
        [(bound_host, port)] = server.addresses
        assert bound_host == "::"
        for address in ("127.0.0.1", "::1"):
            async with await trio.open_tcp_stream(address, port) as stream:
                assert await exchange(stream, b"both\n") == b"both\n"
        server.stop()
    peers = [event.peer for event in recorder.of(Connected)]
    assert peers[0] is not None
    assert peers[0].startswith("[::ffff:127.0.0.1]:")


async def test_exit_split_across_packets_ends_the_session_without_losing_the_echo(
    server: EchoServer, recorder: Recorder
) -> None:
    async with await connect(server) as stream:
        await stream.send_all(b"hello\nex")
        await recorder.wait_for(Disconnected, 0)
        assert await stream.receive_some(100) == b"hello\nex"
        # Plenty after `exit`: the server must not answer it with a RST that eats the echo.
        await stream.send_all(b"it\r\n" + b"after exit\n" * 100_000)
        assert await receive_all(stream, [65536]) == b"it\r\n"
    [end] = await recorder.wait_for(Disconnected)
    assert end.reason == "exit"


async def test_a_reset_is_logged_and_harms_no_other_client(
    server: EchoServer, recorder: Recorder
) -> None:
    async with await connect(server) as steady:
        rude = await connect(server)
        await rude.send_all(b"bye")
        await recorder.wait_for(Connected, 2)
        # SO_LINGER with a zero timeout makes close() send a RST.
        rude.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await rude.aclose()
        [end] = await recorder.wait_for(Disconnected)
        assert end.reason == "reset"
        assert await exchange(steady, b"still here\n") == b"still here\n"


async def test_shutdown_echoes_everything_already_read_then_closes(recorder: Recorder) -> None:
    """A client that stops reading: the server is blocked mid-echo when asked to stop.
    It must finish that echo (the client then reads it all), read nothing new, and end."""
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(trio_echo.serve, ServerConfig(port=0, shutdown_timeout=30), emit=recorder)
        )
        stream = await connect(server)
        # Fill every buffer on the way: the server's send_all blocks, then its reads stop.
        sent = await send_until_blocked(stream)
        server.stop()
        [stopping] = await recorder.wait_for(Stopping)
        assert stopping.active == 1
        async with stream:
            echoed = await receive_all(stream, [65536])
    [end] = recorder.of(Disconnected)
    assert end.reason == "shutdown"
    assert end.bytes_out == end.bytes_in == len(echoed)
    assert echoed == sent[: len(echoed)]
    assert recorder.of(Stopped)


async def stuck_mid_echo(
    nursery: trio.Nursery, recorder: Recorder, shutdown_timeout: float
) -> tuple[EchoServer, trio.SocketStream]:
    """A server whose only client fills every buffer and never reads: its echo is stuck."""
    server = await nursery.start(
        partial(
            trio_echo.serve, ServerConfig(port=0, shutdown_timeout=shutdown_timeout), emit=recorder
        )
    )
    stream = await connect(server)
    await send_until_blocked(stream)
    return server, stream


async def test_shutdown_timeout_bounds_an_echo_nobody_reads(recorder: Recorder) -> None:
    async with trio.open_nursery() as nursery:
        server, stream = await stuck_mid_echo(nursery, recorder, shutdown_timeout=0.2)
        with trio.fail_after(10):  # the server ends by itself, the client never reads
            server.stop()
            await recorder.wait_for(Stopped)
        await stream.aclose()
    [end] = recorder.of(Disconnected)
    assert end.reason == "shutdown"
    assert end.bytes_out < end.bytes_in


async def test_abort_stops_at_once(recorder: Recorder) -> None:
    async with trio.open_nursery() as nursery:
        server, stream = await stuck_mid_echo(nursery, recorder, shutdown_timeout=3600)
        server.stop()
        with trio.fail_after(10):
            server.abort()
            await recorder.wait_for(Stopped)
        await stream.aclose()


async def test_no_new_clients_after_stop(server: EchoServer, recorder: Recorder) -> None:
    server.stop()
    await recorder.wait_for(Stopped)
    with pytest.raises(OSError, match="all attempts to connect"):
        await connect(server)


async def test_bind_errors_are_plain_os_errors(server: EchoServer) -> None:
    _, port = server.addresses[0]
    with pytest.raises(OSError, match="in use"):
        await EchoServer(ServerConfig(port=port)).open()


async def test_a_client_gone_before_its_handler_runs_does_not_take_the_server_down(
    server: EchoServer, recorder: Recorder
) -> None:
    """Found by the soak: getpeername() fails with ENOTCONN on a connection that was reset
    before the server looked at it. That must end one connection, never the server."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # RST
        with pytest.raises(ConnectionResetError):
            accepted.recv(1)  # the RST has arrived: the peer has no name any more
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(accepted))
        reason = await server.handle(stream)
    assert reason in ("reset", "eof")
    [end] = recorder.of(Disconnected)
    assert end.conn == 1
    async with await connect(server) as other:  # and the server is still serving
        assert await exchange(other, b"fine\n") == b"fine\n"
