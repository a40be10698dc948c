"""Hypothesis over real sockets: several clients at once, each running a random script of
sends (with `exit` lines likely), pauses, and an ending (half-close or reset), checked
against the model of the echo contract and against the server's own log."""

from __future__ import annotations

import socket
import struct

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import Recorder
from tests.test_protocol import interesting, model
from trio_echo.events import Connected, Disconnected
from trio_echo.server import EchoServer, ServerConfig

action = st.one_of(
    st.tuples(st.just("send"), interesting | st.binary(max_size=3000)),
    st.tuples(st.just("pause"), st.floats(min_value=0, max_value=0.003)),
)
script = st.tuples(st.lists(action, max_size=8), st.sampled_from(["half-close", "reset"]))


async def play(
    port: int, actions: list[tuple[str, object]], ending: str
) -> tuple[int, bytes, bytes, str]:
    """Run one client's script; return its local port, what it sent and what came back."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    local_port = stream.socket.getsockname()[1]
    sent, got = bytearray(), bytearray()

    async def read() -> None:
        try:
            while data := await stream.receive_some(65536):
                got.extend(data)
        except trio.BrokenResourceError:
            pass

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        try:
            for kind, value in actions:
                if kind == "send":
                    assert isinstance(value, bytes)
                    await stream.send_all(value)
                    sent.extend(value)
                else:
                    assert isinstance(value, float)
                    await trio.sleep(value)
            if ending == "half-close":
                await stream.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the server ended the session after `exit` while we were still sending
        if ending == "reset":
            nursery.cancel_scope.cancel()
    if ending == "reset":
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()
    return local_port, bytes(sent), bytes(got), ending


@settings(max_examples=40)
@given(clients=st.lists(script, min_size=1, max_size=4))
async def test_random_sessions_over_real_sockets(
    clients: list[tuple[list[tuple[str, object]], str]],
) -> None:
    recorder = Recorder()
    results = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(EchoServer(ServerConfig(port=0), emit=recorder).run)
            _, port = server.addresses[0]

            async def run_one(actions: list[tuple[str, object]], ending: str) -> None:
                results.append(await play(port, actions, ending))

            async with trio.open_nursery() as players:
                for actions, ending in clients:
                    players.start_soon(run_one, actions, ending)
            await recorder.wait_for(Disconnected, len(clients))
            server.stop()
    named = [(e.peer, e.conn) for e in recorder.of(Connected) if e.peer is not None]
    conn_of = {int(peer.rpartition(":")[2]): conn for peer, conn in named}
    end_of = {e.conn: e for e in recorder.of(Disconnected)}
    for local_port, sent, got, ending in results:
        cut = model(sent, at_end=ending == "half-close")
        want = sent if cut is None else sent[:cut]
        if local_port not in conn_of:  # reset before the server could even name it
            assert ending == "reset"
            assert got == b""
            continue
        end = end_of[conn_of[local_port]]
        if ending == "half-close":
            assert got == want
            assert end.reason == ("eof" if cut is None else "exit")
            assert end.bytes_out == len(want)
        else:
            assert want.startswith(got)  # a reset may cut the echo short, never change it
            assert end.reason in ("reset", "exit")
