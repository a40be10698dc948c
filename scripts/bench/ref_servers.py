"""Reference echo servers for the benchmark, each written the way its own docs teach.

    python scripts/bench/ref_servers.py KIND PORT READ_SIZE [CERT]

KIND is one of `KINDS`; with CERT (a PEM file with the certificate and its key) the server
speaks TLS, as its docs teach: asyncio's `start_server(ssl=...)`, trio's `SSLStream` through
`serve_ssl_over_tcp`. Each listens on 127.0.0.1:PORT with a backlog of 4096 (asyncio's
default of 100 would make 1,000 connecting clients wait for SYN retries, which measures the
backlog and not the server), reads at most READ_SIZE bytes at a time where the API lets it
choose, and echoes each read before the next one. They are here to be measured against, so
they stay as plain as their tutorials: no logging, no limits, no graceful shutdown.
"""

from __future__ import annotations

import asyncio
import importlib
import ssl
import sys
from collections.abc import Callable, Coroutine
from typing import Any, cast

import trio

HOST = "127.0.0.1"
BACKLOG = 4096


def tls_context(cert: str | None) -> ssl.SSLContext | None:
    if cert is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert)
    return context


async def trio_tutorial(port: int, read_size: int, cert: str | None = None) -> None:
    """The trio tutorial's server: serve_tcp, receive_some, send_all (over TLS:
    serve_ssl_over_tcp, the same loop over an SSLStream)."""

    async def echo(stream: trio.abc.Stream) -> None:
        try:
            while data := await stream.receive_some(read_size):
                await stream.send_all(data)
        except trio.BrokenResourceError:
            pass

    context = tls_context(cert)
    if context is None:
        await trio.serve_tcp(echo, port, host=HOST, backlog=BACKLOG)
    else:
        await trio.serve_ssl_over_tcp(echo, port, context, host=HOST, backlog=BACKLOG)


async def asyncio_streams(port: int, read_size: int, cert: str | None = None) -> None:
    """asyncio's high-level streams: start_server, read, write, drain."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(read_size):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    server = await asyncio.start_server(echo, HOST, port, backlog=BACKLOG, ssl=tls_context(cert))
    async with server:
        await server.serve_forever()


class EchoProtocol(asyncio.Protocol):
    """asyncio's low-level callbacks: every chunk the transport hands over is written back.

    The transport reads as much as is there (it picks the size); when the peer stops reading,
    writes pile up in the transport's buffer until its high-water mark pauses this protocol,
    and `pause_writing` then stops reading, which is the backpressure the others have.
    """

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have the same methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def pause_writing(self) -> None:
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()


async def asyncio_protocol(port: int, read_size: int, cert: str | None = None) -> None:
    del read_size, cert  # the transport chooses; measured over plain TCP only
    loop = asyncio.get_running_loop()
    server = await loop.create_server(EchoProtocol, HOST, port, backlog=BACKLOG)
    async with server:
        await server.serve_forever()


class DatagramEcho(asyncio.DatagramProtocol):
    """asyncio's datagram callbacks: every datagram is sent back to where it came from."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.transport.sendto(data, addr)


async def asyncio_datagram(port: int, read_size: int, cert: str | None = None) -> None:
    del read_size, cert  # a datagram is read whole
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(DatagramEcho, local_addr=(HOST, port))
    try:
        await asyncio.Event().wait()  # until interrupted
    finally:
        transport.close()


async def websockets_echo(port: int, read_size: int, cert: str | None = None) -> None:
    """The `websockets` library's echo server, as its documentation's first example: serve,
    `async for message in websocket`, send (defaults kept: messages up to 1 MiB, as ours)."""
    del read_size  # messages, not reads
    from websockets.asyncio.server import ServerConnection, serve

    async def echo(websocket: ServerConnection) -> None:
        async for message in websocket:
            await websocket.send(message)

    async with serve(echo, HOST, port, ssl=tls_context(cert), backlog=BACKLOG) as server:
        await server.serve_forever()


Server = Callable[[int, int, str | None], Coroutine[Any, Any, None]]
KINDS: dict[str, tuple[str, Server]] = {
    "trio-tutorial": ("trio", trio_tutorial),
    "asyncio-streams": ("asyncio", asyncio_streams),
    "asyncio-protocol": ("asyncio", asyncio_protocol),
    "uvloop-streams": ("uvloop", asyncio_streams),
    "uvloop-protocol": ("uvloop", asyncio_protocol),
    "asyncio-datagram": ("asyncio", asyncio_datagram),
    "uvloop-datagram": ("uvloop", asyncio_datagram),
    "websockets": ("asyncio", websockets_echo),
    "websockets-uvloop": ("uvloop", websockets_echo),
}


def main() -> None:
    if len(sys.argv) not in (4, 5) or sys.argv[1] not in KINDS:
        sys.exit(f"usage: ref_servers.py {{{','.join(KINDS)}}} PORT READ_SIZE [CERT]")
    loop_name, server = KINDS[sys.argv[1]]
    port, read_size = int(sys.argv[2]), int(sys.argv[3])
    cert = sys.argv[4] if len(sys.argv) == 5 else None
    try:
        if loop_name == "trio":
            trio.run(server, port, read_size, cert)
        elif loop_name == "asyncio":
            asyncio.run(server(port, read_size, cert))
        else:
            uvloop: Any = importlib.import_module("uvloop")  # an optional benchmark extra
            uvloop.run(server(port, read_size, cert))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
