"""The client and server over TLS as a user runs them: trust by CA, by fingerprint or not at
all, every refusal explained with the flag that fixes it, and TLS against plain TCP."""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path

import pytest
import trio

from tests.conftest import TlsFiles
from tests.processes import CHECK, SERVER, run_client, server_process
from tests.test_entry_points import one_error_line
from trio_echo import tls


def events_of(stderr: bytes) -> list[dict[str, object]]:
    return [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]


async def test_a_pinned_session_echoes_four_mebibytes_and_ends_cleanly_on_both_sides() -> None:
    payload = os.urandom(4 << 20)
    async with server_process("--tls", "--quiet") as server:
        client = await run_client(
            "--port", str(server.port), "--tls", "--tls-fingerprint", server.fingerprint,
            "--quiet", "--log-format", "json", stdin=payload,
        )  # fmt: skip
        ended = json.loads(await server.log.until('"server.disconnected"'))
    assert client.returncode == 0, client.stderr
    assert client.stdout == payload
    events = events_of(client.stderr)
    [secured] = [e for e in events if e["event"] == "client.tls_established"]
    assert (secured["trust"], secured["fingerprint"]) == ("fingerprint", server.fingerprint)
    assert secured["subject"] == "CN=localhost"
    assert (events[-1]["reason"], events[-1]["bytes_in"]) == ("eof", len(payload))
    # The server saw a clean end of input (our close_notify), with everything echoed.
    assert (ended["reason"], ended["bytes_in"], ended["bytes_out"]) == (
        "eof",
        len(payload),
        len(payload),
    )


async def test_exit_over_tls_ends_the_session() -> None:
    async with server_process("--tls") as server:
        client = await run_client(
            "--port", str(server.port), "--tls", "--tls-fingerprint", server.fingerprint,
            stdin=b"hello\nexit\nnot sent\n",
        )  # fmt: skip
        ended = json.loads(await server.log.until('"server.disconnected"'))
    assert (client.returncode, client.stdout) == (0, b"hello\nexit\n")
    assert ended["reason"] == "exit"


async def test_a_client_trusting_the_ca_verifies_the_certificate_and_its_name(
    tls_files: TlsFiles,
) -> None:
    async with server_process(
        "--tls", "--tls-cert", tls_files.cert, "--tls-key", tls_files.key
    ) as server:
        client = await run_client(
            "--host", "localhost", "--port", str(server.port), "--tls", "--tls-ca",
            tls_files.ca_file, "--log-format", "json", stdin=b"verified\n",
        )  # fmt: skip
        established = json.loads(await server.log.until('"server.tls_established"'))
    assert (client.returncode, client.stdout) == (0, b"verified\n")
    [secured] = [e for e in events_of(client.stderr) if e["event"] == "client.tls_established"]
    assert secured["trust"] == "ca"
    assert "trustme" in str(secured["issuer"])
    assert established["sni"] == "localhost"


async def test_an_untrusted_certificate_is_described_with_the_flag_that_trusts_it() -> None:
    async with server_process("--tls") as server:
        client = await run_client("--port", str(server.port), "--tls", stdin=b"x\n")
    assert client.returncode == 1
    error = one_error_line(client.stderr, "trio-echo-client")
    assert "the server's certificate is not trusted: self-signed certificate" in error
    assert "it presented CN=localhost, issued by CN=localhost, valid " in error
    assert f"to trust this certificate, pass --tls-fingerprint {server.fingerprint}" in error


async def test_a_certificate_for_another_name_says_so(tls_files: TlsFiles) -> None:
    async with server_process("--tls", "--tls-cert", tls_files.combined) as server:
        client = await run_client(
            "--port", str(server.port), "--tls", "--tls-ca", tls_files.ca_file,
            "--tls-server-name", "wrong.example", stdin=b"x\n",
        )  # fmt: skip
    assert client.returncode == 1
    error = one_error_line(client.stderr, "trio-echo-client")
    assert "it is not for the name 'wrong.example'" in error
    assert "for names localhost, 127.0.0.1, ::1" in error


async def test_a_wrong_pin_names_the_fingerprint_seen() -> None:
    wrong = "sha256:" + "0" * 64
    async with server_process("--tls") as server:
        client = await run_client(
            "--port", str(server.port), "--tls", "--tls-fingerprint", wrong, stdin=b"x\n"
        )
    assert client.returncode == 1
    error = one_error_line(client.stderr, "trio-echo-client")
    assert f"not the pinned one (--tls-fingerprint {wrong})" in error
    assert f"pin the new one: --tls-fingerprint {server.fingerprint}" in error


async def test_insecure_says_so_in_capitals() -> None:
    async with server_process("--tls") as server:
        client = await run_client(
            "--port", str(server.port), "--tls", "--tls-insecure", stdin=b"x\n"
        )
    assert (client.returncode, client.stdout) == (0, b"x\n")
    assert "NOT VERIFIED (--tls-insecure)" in client.stderr.decode()


async def test_tls_against_a_plain_echo_port_says_drop_tls() -> None:
    async with server_process() as server:
        client = await run_client("--port", str(server.port), "--tls", "--tls-insecure")
    assert client.returncode == 1
    error = one_error_line(client.stderr, "trio-echo-client")
    assert "sent our own TLS ClientHello back: it is a plain echo, not TLS" in error
    assert "drop --tls" in error


async def test_tls_against_a_port_that_speaks_something_else() -> None:
    async def banner(stream: trio.SocketStream) -> None:
        await stream.send_all(b"SSH-2.0-OpenSSH_9.2\r\n")
        await stream.receive_some(65536)

    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(partial(trio.serve_tcp, banner, 0, host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        client = await run_client("--port", str(port), "--tls", "--tls-insecure")
        nursery.cancel_scope.cancel()
    error = one_error_line(client.stderr, "trio-echo-client")
    assert 'did not answer with TLS (it sent "SSH-2.0-OpenSSH_9.2\\r\\n")' in error
    assert "is this a plain TCP port? drop --tls" in error


async def test_mutual_tls_from_the_client_side(tls_files: TlsFiles) -> None:
    server_args = [
        "--tls",
        "--tls-cert",
        tls_files.combined,
        "--tls-client-ca",
        tls_files.client_ca_file,
    ]
    async with server_process(*server_args) as server:
        trust = [
            "--port",
            str(server.port),
            "--host",
            "localhost",
            "--tls",
            "--tls-ca",
            tls_files.ca_file,
        ]
        refused = await run_client(*trust, stdin=b"x\n")
        accepted = await run_client(
            *trust, "--tls-cert", tls_files.client_cert, "--tls-key", tls_files.client_key,
            stdin=b"me\n",
        )  # fmt: skip
        ends = [json.loads(await server.log.until('"server.disconnected"')) for _ in range(2)]
    assert refused.returncode == 1
    said = refused.stderr.decode()  # the server's alert (certificate required), in words
    assert "the server requires a client certificate: pass --tls-cert and --tls-key" in said
    assert (accepted.returncode, accepted.stdout) == (0, b"me\n")
    assert ends[0]["reason"] == "tls_error"
    assert ends[0]["detail"] == {"code": "PEER_DID_NOT_RETURN_A_CERTIFICATE"}
    assert "requires one (--tls-client-ca)" in ends[0]["message"]
    assert ends[1]["reason"] == "eof"


async def test_a_short_echo_over_tls_is_never_a_success() -> None:
    """A TLS server that keeps the last byte and the connection: the client, which waits
    for all it sent before closing, must give up and call it a mismatch."""
    settings = tls.server_tls()

    async def short_echo(plain: trio.SocketStream) -> None:
        stream = trio.SSLStream(plain, settings.context, server_side=True)
        data = await stream.receive_some(65536)
        await stream.send_all(data[:-1])
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(partial(trio.serve_tcp, short_echo, 0, host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        client = await run_client(
            "--port", str(port), "--tls", "--tls-insecure", "--close-timeout", "0.5",
            "--log-format", "json", stdin=b"hello\n",
        )  # fmt: skip
        nursery.cancel_scope.cancel()
    assert client.returncode == 1
    end = events_of(client.stderr)[-1]
    assert (end["reason"], end["bytes_out"], end["bytes_in"]) == ("echo_mismatch", 6, 5)


@pytest.mark.parametrize(
    ("args", "status", "words"),
    [
        (["--tls-ca", "ca.pem"], 2, "--tls-ca need --tls"),
        (["--tls", "--tls-fingerprint", "md5:00"], 2, "is not a fingerprint"),
        (["--tls", "--tls-insecure", "--tls-fingerprint", "sha256:" + "a" * 64], 2, "give one of"),
        (["--tls", "--tls-ca", "/no/such/ca.pem"], 1, "cannot read /no/such/ca.pem: no such file"),
    ],
)
async def test_bad_client_tls_options(args: list[str], status: int, words: str) -> None:
    result = await run_client(*args)
    assert result.returncode == status
    assert words in result.stderr.decode()
    assert "Traceback" not in result.stderr.decode()


async def test_workers_share_one_ephemeral_certificate() -> None:
    async with server_process("--tls", "--workers", "2") as server:
        other = json.loads(await server.log.until('"server.listening"'))
        assert other["tls_fingerprint"] == server.fingerprint
        for _ in range(4):
            client = await run_client(
                "--port", str(server.port), "--tls", "--tls-fingerprint", server.fingerprint,
                stdin=b"same\n",
            )  # fmt: skip
            assert (client.returncode, client.stdout) == (0, b"same\n")


def test_plain_tcp_does_not_import_cryptography() -> None:
    """--tls makes its certificate with cryptography; a plain server must not pay for it."""
    import subprocess
    import sys

    code = "import sys, trio_echo.server, trio_echo.client; print('cryptography' in sys.modules)"
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("args", "status", "words"),
    [
        (["--tls-cert", "cert.pem"], 2, "--tls-cert need --tls"),
        (["--tls", "--tls-cert", "/no/such/cert.pem"], 1, "cannot read /no/such/cert.pem"),
        (["--tls", "--tls-handshake-timeout", "0"], 2, "is not a number of seconds"),
    ],
)
async def test_bad_server_tls_options(args: list[str], status: int, words: str) -> None:
    result = await trio.run_process(
        [*SERVER, "--port", "0", *args], capture_stderr=True, check=False
    )
    assert result.returncode == status
    said = result.stderr.decode()
    assert words in said
    assert "Traceback" not in said


def hostile_certificate(directory: Path) -> str:
    """A certificate whose subject, issuer and names carry terminal escapes, a bell, a CR
    and a right-to-left override: what a malicious server could present."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, EVIL)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.DNSName("a\x1b[2Jb")]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    path = directory / "hostile.pem"
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(key_pem + cert.public_bytes(serialization.Encoding.PEM))
    return str(path)


EVIL = "evil\x1b]0;pwned\x07\r\u202eFAKE"
RAW = ("\x1b", "\x07", "\r", "\u202e")


async def test_a_hostile_certificate_is_shown_escaped_by_the_client_and_the_check(
    tmp_path: Path,
) -> None:
    """Every string a server puts in its certificate reaches our output escaped (issue 24, 8)."""
    cert = hostile_certificate(tmp_path)
    async with server_process("--tls", "--tls-cert", cert) as server:
        port = str(server.port)
        client = await run_client("--port", port, "--tls", "--tls-insecure", stdin=b"hi\n")
        check = await trio.run_process(
            [*CHECK, "127.0.0.1", port, "--tls", "--tls-insecure"],
            capture_stdout=True, capture_stderr=True, check=False,
        )  # fmt: skip
    said = client.stderr.decode() + check.stdout.decode() + check.stderr.decode()
    assert client.stdout == b"hi\n"
    assert "CN=evil\\x1b]0" in said  # RFC 4514 escapes the `;` after it, and we the `\\`
    assert "pwned\\x07\\r\\u202eFAKE" in said
    assert [raw for raw in RAW if raw in said] == []
