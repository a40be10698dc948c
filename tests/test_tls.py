"""The server over TLS, in-process on real sockets: certificates, events, every diagnosed
failure, and the plain server's promises (exit, limits, idle, shutdown) kept over TLS."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing
import trustme
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import Recorder, TlsFiles, require_tool, said
from tests.streams import PAIRS, receive_all, split
from tests.test_protocol import interesting
from tests.test_server_handler import cuts, expected
from trio_echo import tls
from trio_echo.events import (
    Connected,
    Disconnected,
    Listening,
    Received,
    Rejected,
    Sent,
    Stopped,
    Stopping,
    TlsEstablished,
)
from trio_echo.rendering import explain
from trio_echo.server import EchoServer, ServerConfig

MIB = 1 << 20


@asynccontextmanager
async def tls_server(
    recorder: Recorder, settings: tls.ServerTls, **options: object
) -> AsyncIterator[EchoServer]:
    async with trio.open_nursery() as nursery:
        config = ServerConfig(port=0, tls=settings, **options)  # type: ignore[arg-type]
        server = EchoServer(config, emit=recorder)
        await nursery.start(server.run)
        yield server
        server.stop()


def trusting(files: TlsFiles) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=files.ca_file)
    return context


def pinned_context() -> ssl.SSLContext:
    """A client context that checks nothing, for tests that pin by hand."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def open_tls(
    server: EchoServer, context: ssl.SSLContext, name: str | None = "localhost"
) -> trio.SSLStream[trio.SocketStream]:
    host, port = server.addresses[0]
    stream = trio.SSLStream(await trio.open_tcp_stream(host, port), context, server_hostname=name)
    await stream.do_handshake()
    return stream


async def echo_over_tls(stream: trio.SSLStream[trio.SocketStream], payload: bytes) -> bytes:
    """Send, and read until everything came back; then close with close_notify (TLS has no
    half-close: the client that knows what it sent waits for it, then closes)."""
    got = bytearray()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream.send_all, payload)
        while len(got) < len(payload):
            data = await stream.receive_some(65536)
            if not data:
                break
            got += data
    await stream.aclose()
    return bytes(got)


@pytest.fixture
def files_tls(tls_files: TlsFiles) -> tls.ServerTls:
    return tls.server_tls(cert_file=tls_files.cert, key_file=tls_files.key)


# ---- certificates --------------------------------------------------------------------------


async def test_an_ephemeral_certificate_is_announced_by_the_fingerprint_it_presents() -> None:
    recorder = Recorder()
    settings = tls.server_tls(host="127.0.0.1")
    async with tls_server(recorder, settings) as server:
        [listening] = recorder.of(Listening)
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", str(listening.tls_fingerprint))
        assert f"--tls --tls-fingerprint {listening.tls_fingerprint}" in explain(listening)
        stream = await open_tls(server, pinned_context(), name=None)
        der = stream.getpeercert(binary_form=True)
        assert der is not None
        assert tls.fingerprint(der) == listening.tls_fingerprint
        seen = tls.ServerCertificate.from_der(der)
        assert {"localhost", "127.0.0.1", "::1", socket.gethostname()} <= set(seen.names)
        assert 29 < seen.days_left() <= 30
        assert await echo_over_tls(stream, b"pinned\n") == b"pinned\n"


@pytest.mark.parametrize("combined", [False, True], ids=["cert-and-key", "key-in-cert-file"])
async def test_a_certificate_from_files_is_verified_by_a_client_trusting_its_ca(
    tls_files: TlsFiles, combined: bool
) -> None:
    recorder = Recorder()
    if combined:
        settings = tls.server_tls(cert_file=tls_files.combined)
    else:
        settings = tls.server_tls(cert_file=tls_files.cert, key_file=tls_files.key)
    async with tls_server(recorder, settings) as server:
        stream = await open_tls(server, trusting(tls_files))
        assert await echo_over_tls(stream, b"verified\n") == b"verified\n"
    [established] = recorder.of(TlsEstablished)
    assert established.sni == "localhost"
    assert established.version in ("TLSv1.2", "TLSv1.3")
    assert established.cipher
    assert established.client_cert is None
    [end] = recorder.of(Disconnected)
    assert (end.reason, end.bytes_in, end.bytes_out) == ("eof", 9, 9)


@pytest.mark.parametrize(
    ("files", "words"),
    [
        (("missing.pem", None), "no such file"),
        (("KEY", None), "no PEM certificate"),
        (("CERT", "OTHER_KEY"), "the key does not belong to the certificate"),
    ],
)
def test_unusable_certificate_files_are_one_clear_line(
    tls_files: TlsFiles, files: tuple[str, str | None], words: str
) -> None:
    other = trustme.CA().issue_cert("localhost")
    other_key = f"{tls_files.cert}.other-key"
    other.private_key_pem.write_to_path(other_key)
    names = {"KEY": tls_files.combined.replace("combined", "key"), "CERT": tls_files.cert}
    names["OTHER_KEY"] = other_key
    cert, key = (names.get(f, f) if f else None for f in files)
    assert cert is not None
    with pytest.raises(tls.TlsFailed, match=words) as failed:
        tls.server_tls(cert_file=cert, key_file=key)
    assert "\n" not in str(failed.value)


# ---- mutual TLS ----------------------------------------------------------------------------


@pytest.fixture
def mutual(tls_files: TlsFiles) -> tls.ServerTls:
    return tls.server_tls(
        cert_file=tls_files.cert, key_file=tls_files.key, client_ca=tls_files.client_ca_file
    )


async def test_mutual_tls_names_the_client_certificate(
    tls_files: TlsFiles, mutual: tls.ServerTls
) -> None:
    recorder = Recorder()
    context = trusting(tls_files)
    context.load_cert_chain(tls_files.client_cert, tls_files.client_key)
    async with tls_server(recorder, mutual) as server:
        stream = await open_tls(server, context)
        assert await echo_over_tls(stream, b"it is me\n") == b"it is me\n"
    [established] = recorder.of(TlsEstablished)
    assert str(established.client_cert).startswith("CN=alice,")


@pytest.mark.parametrize("certificate", ["none", "signed by another CA"])
async def test_mutual_tls_refuses_a_client_without_the_right_certificate(
    tls_files: TlsFiles, mutual: tls.ServerTls, certificate: str
) -> None:
    recorder = Recorder()
    context = trusting(tls_files)
    if certificate != "none":
        stranger = trustme.CA().issue_cert("mallory@example.test")
        stranger.configure_cert(context)
    async with tls_server(recorder, mutual) as server:
        stream = await open_tls(server, context)  # TLS 1.3: the client finishes first
        await stream.send_all(b"let me in\n")
        with pytest.raises(trio.BrokenResourceError):
            await stream.receive_some(100)
        [end] = await recorder.wait_for(Disconnected)
    assert end.reason == "tls_error"
    want = "requires one" if certificate == "none" else "not signed by the CA"
    assert want in said(end.detail)
    assert not recorder.of(TlsEstablished)


# ---- failed handshakes, explained -----------------------------------------------------------


# A client for `failure_of`: it connects to (host, port), does its wrong thing, and returns
# the connection to hold open until the server has judged it (or None).
Client = Callable[[str, int], Awaitable[trio.abc.AsyncResource | None]]


async def failure_of(settings: tls.ServerTls, client: Client, **options: object) -> str:
    """The `detail` of the one connection a client makes to a TLS server."""
    recorder = Recorder()
    async with tls_server(recorder, settings, **options) as server:
        host, port = server.addresses[0]
        with trio.fail_after(10):
            held = await client(host, port)
            [end] = await recorder.wait_for(Disconnected)
        if held is not None:
            await held.aclose()
        assert end.reason == "tls_error"
        assert end.bytes_in == end.bytes_out == 0
        # ... and the server still serves.
        assert await echo_over_tls(await open_tls(server, pinned_context()), b"ok\n") == b"ok\n"
    return said(end.detail)


def sending(data: bytes, reset: bool = False) -> Client:
    """A client that sends `data` (then a RST, if `reset`)."""

    async def client(host: str, port: int) -> trio.SocketStream | None:
        stream = await trio.open_tcp_stream(host, port)
        await stream.send_all(data)
        if not reset:
            return stream
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await stream.aclose()
        return None

    return client


def handshaking(context: ssl.SSLContext) -> Client:
    async def client(host: str, port: int) -> trio.SocketStream:
        transport = await trio.open_tcp_stream(host, port)
        stream = trio.SSLStream(transport, context, server_hostname="localhost")
        with pytest.raises(trio.BrokenResourceError):
            await stream.do_handshake()
        return transport

    return client


def openssl(*args: str) -> Client:
    """OpenSSL's own client, which (unlike Python's) sends its alert when it gives up."""

    async def client(host: str, port: int) -> None:
        require_tool("openssl")
        await trio.run_process(
            ["openssl", "s_client", "-connect", f"{host}:{port}", *args],
            stdin=b"",
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        return None

    return client


async def test_a_plain_text_client_is_shown_what_it_sent(files_tls: tls.ServerTls) -> None:
    detail = await failure_of(files_tls, sending(b"hello\n"))
    assert 'spoke plain text or another protocol, not TLS: "hello\\n" is not a TLS ClientHello' in (
        detail
    )


async def test_plain_http_is_called_plain_http(files_tls: tls.ServerTls) -> None:
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    assert "a plain HTTP request" in await failure_of(files_tls, sending(request))


async def test_garbage_after_a_handshake_header_is_not_a_handshake(
    files_tls: tls.ServerTls,
) -> None:
    detail = await failure_of(files_tls, sending(b"\x16\x03\x01\x00\x05" + b"\xff" * 5))
    assert "not a TLS handshake we can complete" in detail


async def test_a_client_that_refuses_our_certificate(
    files_tls: tls.ServerTls, tls_files: TlsFiles
) -> None:
    # It trusts another CA only (the client certificates' one).
    refusing = openssl("-verify_return_error", "-CAfile", tls_files.client_ca_file)
    detail = await failure_of(files_tls, refusing)
    assert "the client refused our certificate" in detail


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
async def test_no_tls_version_in_common(files_tls: tls.ServerTls) -> None:
    context = pinned_context()
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")

    detail = await failure_of(files_tls, handshaking(context))
    assert "no TLS version in common" in detail


async def test_no_cipher_in_common(files_tls: tls.ServerTls) -> None:
    context = pinned_context()
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256")  # our certificate's key is ECDSA

    detail = await failure_of(files_tls, handshaking(context))
    assert "no cipher in common" in detail


async def test_a_handshake_that_never_comes_is_closed_after_the_timeout() -> None:
    settings = tls.server_tls(handshake_timeout=0.3)

    detail = await failure_of(settings, sending(b""))
    assert (
        detail == "no TLS handshake within 0.3 s (--tls-handshake-timeout): the client sent nothing"
    )


async def test_a_client_that_resets_mid_handshake(files_tls: tls.ServerTls) -> None:
    # The start of a ClientHello, then a RST.
    detail = await failure_of(files_tls, sending(b"\x16\x03\x01\x02\x00\x01", reset=True))
    assert "in the middle of the TLS handshake" in detail


# ---- the plain server's promises, over TLS -------------------------------------------------


async def test_exit_split_across_records_ends_the_session_with_the_echo_intact(
    files_tls: tls.ServerTls,
) -> None:
    recorder = Recorder()
    async with tls_server(recorder, files_tls) as server:
        stream = await open_tls(server, pinned_context())
        await stream.send_all(b"hello\nex")
        assert await stream.receive_some(100) == b"hello\nex"
        await stream.send_all(b"it\r\n" + b"after exit\n" * 1000)
        rest = bytearray()
        while data := await stream.receive_some(65536):  # until the server's close_notify
            rest += data
        assert rest == b"it\r\n"
        await stream.aclose()
        [end] = await recorder.wait_for(Disconnected)
    assert end.reason == "exit"


async def test_a_connection_still_in_its_handshake_counts_toward_max_connections(
    files_tls: tls.ServerTls,
) -> None:
    recorder = Recorder()
    async with tls_server(recorder, files_tls, max_connections=1) as server:
        host, port = server.addresses[0]
        async with await trio.open_tcp_stream(host, port):  # no ClientHello, ever
            await recorder.wait_for(Connected)
            async with await trio.open_tcp_stream(host, port) as second:
                [rejected] = await recorder.wait_for(Rejected)
                assert rejected.active == 1
                assert await receive_all(second, [100]) == b""


async def test_idle_timeout_over_tls_ends_with_a_close_notify(files_tls: tls.ServerTls) -> None:
    recorder = Recorder()
    async with tls_server(recorder, files_tls, idle_timeout=0.2) as server:
        stream = await open_tls(server, pinned_context())
        assert await echo_over_tls_keep_open(stream, b"then silence\n") == b"then silence\n"
        with trio.fail_after(10):
            assert await stream.receive_some(100) == b""  # close_notify, not a broken stream
        await stream.aclose()
        [end] = await recorder.wait_for(Disconnected)
    assert end.reason == "timeout"


async def echo_over_tls_keep_open(stream: trio.SSLStream[trio.SocketStream], line: bytes) -> bytes:
    await stream.send_all(line)
    got = b""
    while len(got) < len(line):
        got += await stream.receive_some(100)
    return got


async def test_shutdown_over_tls_echoes_everything_already_read(
    files_tls: tls.ServerTls,
) -> None:
    """A client sends 8 MiB and reads nothing until the server is asked to stop (a send
    cancelled would break a TLS stream, so it is never cancelled). The server must send
    back everything it read, read nothing new, and end with a close_notify."""
    recorder = Recorder()
    payload = os.urandom(8 * MIB)
    async with tls_server(recorder, files_tls, shutdown_timeout=30) as server:
        stream = await open_tls(server, pinned_context())

        async def send() -> None:
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(payload)  # the server stops reading: never all of it

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            await recorder.wait_for(Received, 64)  # in the middle of it
            server.stop()
            [stopping] = await recorder.wait_for(Stopping)
            assert stopping.active == 1
            echoed = await receive_all(stream, [65536])  # until the close_notify
        await stream.aclose()
        await recorder.wait_for(Stopped)
    [end] = recorder.of(Disconnected)
    assert end.reason == "shutdown"
    assert end.bytes_out == end.bytes_in == len(echoed)
    assert 0 < len(echoed) < len(payload)
    assert echoed == payload[: len(echoed)]


async def test_stop_during_a_handshake_ends_the_connection_as_a_shutdown(
    files_tls: tls.ServerTls,
) -> None:
    recorder = Recorder()
    async with tls_server(recorder, files_tls) as server:
        host, port = server.addresses[0]
        async with await trio.open_tcp_stream(host, port) as stream:
            await stream.send_all(b"\x16\x03\x01")  # a handshake begun, never finished
            await recorder.wait_for(Connected)
            server.stop()
            [end] = await recorder.wait_for(Disconnected)
    assert end.reason == "shutdown"


async def test_a_thousand_silent_connections_do_not_keep_a_newcomer_out() -> None:
    """Connections that never send a ClientHello occupy a handshake each; a newcomer still
    gets its handshake and its echo."""
    recorder = Recorder()
    settings = tls.server_tls()
    async with tls_server(recorder, settings, max_connections=2000) as server:
        host, port = server.addresses[0]
        silent = [await trio.open_tcp_stream(host, port) for _ in range(1000)]
        await recorder.wait_for(Connected, 1000)
        with trio.fail_after(30):
            stream = await open_tls(server, pinned_context())
            assert await echo_over_tls(stream, b"let me in\n") == b"let me in\n"
        for one in silent:
            await one.aclose()
    assert len(recorder.of(TlsEstablished)) == 1


# ---- the echo contract over TLS, as a model ------------------------------------------------


@pytest.fixture(scope="module")
def memory_tls() -> tls.ServerTls:
    return tls.server_tls()  # one certificate for every example


@given(
    data=interesting | st.binary(max_size=5000),
    cut_at=cuts,
    chunk_size=st.integers(min_value=1, max_value=64) | st.integers(min_value=1, max_value=4096),
    exit_command=st.booleans(),
    pair=st.sampled_from(["memory", "socket"]),
)
@settings(max_examples=100)  # a handshake each: fewer examples than the plain handler's
async def test_echo_over_tls_is_the_input_up_to_the_first_exit_line(
    memory_tls: tls.ServerTls,
    data: bytes,
    cut_at: list[int],
    chunk_size: int,
    exit_command: bool,
    pair: str,
) -> None:
    """The handler over TLS, on trio's memory streams (ServerTlsStream's general path) and
    on a socket pair (its own non-blocking reads and writes): records cut anywhere, reads of
    any size, `exit` anywhere. Without half-close, the client reads its whole echo, then
    closes (close_notify), and that is the end of input."""
    recorder = Recorder()
    config = ServerConfig(chunk_size=chunk_size, exit_command=exit_command, tls=memory_tls)
    server = EchoServer(config, emit=recorder)
    client_side, server_side = PAIRS[pair]()
    client = trio.SSLStream(client_side, pinned_context())
    reasons: list[str] = []
    got = bytearray()

    async def run_handler() -> None:
        reasons.append(await server.handle(server_side))

    async def send() -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            for piece in split(data, cut_at):
                await client.send_all(piece)
                await trio.lowlevel.checkpoint()

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_handler)
            nursery.start_soon(send)
            while len(got) < len(data) and (piece := await client.receive_some(64)):
                got += piece
            await client.aclose()
    want_echo, want_reason = expected(data, exit_command)
    assert bytes(got) == want_echo
    assert reasons == [want_reason]
    assert all(0 < event.bytes <= chunk_size for event in recorder.of(Received))
    assert sum(event.bytes for event in recorder.of(Sent)) == len(want_echo)
    [end] = recorder.of(Disconnected)
    assert (end.reason, end.bytes_out) == (want_reason, len(want_echo))


def test_a_certificate_and_key_from_pipes_are_read_once(tls_files: TlsFiles) -> None:
    """`--tls-cert <(...) --tls-key <(...)`: a pipe can be read only once, and the files were
    read twice (issue 24, 15)."""
    ends = []
    paths = []
    for path in (tls_files.cert, tls_files.key):
        read_end, write_end = os.pipe()
        with open(path, "rb") as source:
            os.write(write_end, source.read())  # small: the pipe's buffer holds it
        os.close(write_end)
        ends.append(read_end)
        paths.append(f"/dev/fd/{read_end}")
    try:
        settings = tls.server_tls(cert_file=paths[0], key_file=paths[1])
    finally:
        for end in ends:
            os.close(end)
    assert settings.fingerprint == tls.server_tls(cert_file=tls_files.combined).fingerprint


def test_an_encrypted_key_is_refused_in_one_line_not_asked_for(
    tls_files: TlsFiles, tmp_path: Path
) -> None:
    """OpenSSL would prompt for the pass phrase on the terminal (a hang under a pty, then
    "unexpected error: Invalid argument"); a server has no one to ask."""
    from cryptography.hazmat.primitives import serialization

    with open(tls_files.key, "rb") as plain:
        key = serialization.load_pem_private_key(plain.read(), password=None)
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(tls.TlsFailed, match="its key is encrypted"):
        tls.server_tls(cert_file=tls_files.cert, key_file=str(encrypted))
