"""TLS with programs no one here wrote: OpenSSL's s_client and socat against our server, and
our client and check against `socat OPENSSL-LISTEN ... PIPE`."""

from __future__ import annotations

import datetime
import json
import os
import re
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trustme

from tests.conftest import Recorder, TlsFiles, require_tool
from tests.processes import external_server, free_port, run_client, server_process
from tests.test_hardening import rss
from tests.test_interop import PAYLOAD, check_script, run, socat_echo
from tests.test_tls import tls_server
from trio_echo import tls
from trio_echo.check import Checker
from trio_echo.events import Disconnected


async def test_openssl_s_client_a_line_its_echo_and_exit(tls_files: TlsFiles) -> None:
    recorder = Recorder()
    settings = tls.server_tls(cert_file=tls_files.combined)
    async with tls_server(recorder, settings) as server:
        _, port = server.addresses[0]
        result = await run(
            [
                require_tool("openssl"), "s_client", "-connect", f"127.0.0.1:{port}",
                "-servername", "localhost", "-CAfile", tls_files.ca_file,
                "-verify_return_error", "-quiet", "-ign_eof",
            ],
            b"hello from openssl\nexit\nnot this\n",
        )  # fmt: skip
        [end] = await recorder.wait_for(Disconnected)
    assert result.stdout == b"hello from openssl\nexit\n"
    assert end.reason == "exit"


async def test_socat_openssl_gets_a_mebibyte_back(tls_files: TlsFiles) -> None:
    recorder = Recorder()
    settings = tls.server_tls(cert_file=tls_files.combined)
    async with tls_server(recorder, settings) as server:
        _, port = server.addresses[0]
        address = f"OPENSSL:localhost:{port},cafile={tls_files.ca_file}"
        result = await run([require_tool("socat"), "-t", "10", "-", address], PAYLOAD)
        [end] = await recorder.wait_for(Disconnected)
    assert result.stdout == PAYLOAD
    assert (end.reason, end.bytes_in, end.bytes_out) == ("eof", len(PAYLOAD), len(PAYLOAD))


@asynccontextmanager
async def socat_tls_echo(cert: str) -> AsyncIterator[int]:
    """socat's TLS echo: a PIPE behind OPENSSL-LISTEN, one process per connection."""
    port = free_port()
    listen = f"OPENSSL-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr,cert={cert},verify=0"
    async with external_server([require_tool("socat"), "-d", "-d", listen, "PIPE"], "listening on"):
        yield port


async def test_our_client_with_socat_over_tls(tls_files: TlsFiles) -> None:
    async with socat_tls_echo(tls_files.combined) as port:
        trust = ["--host", "localhost", "--port", str(port), "--tls", "--tls-ca", tls_files.ca_file]
        piped = await run_client(*trust, "--quiet", stdin=PAYLOAD)
        exited = await run_client(*trust, "--exit-timeout", "0.5", stdin=b"hi\nexit\nno\n")
    assert (piped.returncode, piped.stdout) == (0, PAYLOAD)
    assert (exited.returncode, exited.stdout) == (0, b"hi\nexit\n")
    assert "plain echo server that ignores `exit`" in exited.stderr.decode()


async def test_the_check_with_socat_over_tls(tls_files: TlsFiles) -> None:
    async with socat_tls_echo(tls_files.combined) as port:
        result = await check_script(
            "localhost", str(port), "--tls", "--tls-ca", tls_files.ca_file, "--timeout", "1"
        )
        without = await check_script("localhost", str(port), "--timeout", "1")
    out = result.stdout.decode()
    assert result.returncode == 0, out
    assert "verified against the trusted CAs and the name" in out
    assert "plain RFC 862 echo server (not a failure)" in out
    assert without.returncode == 1
    assert "this port speaks TLS" in without.stdout.decode()


async def test_the_check_with_tls_against_a_plain_socat() -> None:
    async with socat_echo() as port:
        result = await check_script("127.0.0.1", str(port), "--tls", "--tls-insecure")
    assert result.returncode == 1
    assert "is this a plain TCP port? drop --tls" in result.stdout.decode()


async def test_the_check_warns_of_a_certificate_about_to_expire_and_fails_an_expired_one(
    tmp_path: Path,
) -> None:
    ca = trustme.CA()
    now = datetime.datetime.now(datetime.UTC)
    figures = {}
    for name, days in (("soon", 5), ("expired", -1)):
        leaf = ca.issue_cert(
            "localhost", not_before=now - datetime.timedelta(days=30),
            not_after=now + datetime.timedelta(days=days),
        )  # fmt: skip
        path = f"{tmp_path}/{name}.pem"
        leaf.private_key_and_cert_chain_pem.write_to_path(path)
        recorder = Recorder()
        async with tls_server(recorder, tls.server_tls(cert_file=path)) as server:
            host, port = server.addresses[0]
            pinned = tls.client_tls(pinned=tls.fingerprint(tls.first_certificate_der(path)))
            report = await Checker(host, port, pings=2, tls_settings=pinned).run()
        [probe] = [p for p in report.probes if p.name == "tls"]
        figures[name] = probe
    assert figures["soon"].status == "WARN"
    assert re.search(r"the certificate expires in [45]\.\d days: renew it", figures["soon"].figure)
    assert figures["expired"].status == "FAIL"
    assert "the certificate expired on " in figures["expired"].diagnosis


async def test_a_server_name_that_is_not_ascii_is_explained_in_the_log_not_on_stderr() -> None:
    """CPython fails to decode such an SNI before our callback runs and writes a traceback to
    stderr itself: past the bounded log, into the JSON lines, and blocking the whole server
    when nobody reads the pipe (issue 24, 4). Now: one `server.disconnected` that says why,
    nothing but JSON lines on stderr, and the server serves on."""
    openssl = require_tool("openssl")
    async with server_process("--tls") as server:
        await trio.run_process(
            [openssl, "s_client", "-connect", f"127.0.0.1:{server.port}",
             "-servername", os.fsdecode(b"\xff\xfe")],
            stdin=b"", capture_stdout=True, capture_stderr=True, check=False,
        )  # fmt: skip
        ended = json.loads(await server.log.until('"server.disconnected"'))
        after = await run_client(
            "--port", str(server.port), "--tls", "--tls-insecure", stdin=b"still here\n"
        )
        server.process.send_signal(signal.SIGTERM)
        lines = await server.log.rest()
    assert (ended["reason"], ended["detail"]) == ("tls_error", {"code": "CALLBACK_FAILED"})
    assert "not ASCII" in ended["message"]
    assert after.stdout == b"still here\n"
    assert [line for line in lines if line and not line.startswith("{")] == []


async def test_a_refused_renegotiation_is_told_to_the_client_at_once() -> None:
    """TLS 1.2 renegotiation is refused (OP_NO_RENEGOTIATION); the refusal stayed in the
    outgoing buffer until our next write, which never came, and the client hung waiting for a
    ServerHello (issue 24, 13). OpenSSL's client renegotiates on a line `R`."""
    openssl = require_tool("openssl")
    async with server_process("--tls") as server:
        client = await trio.lowlevel.open_process(
            [openssl, "s_client", "-connect", f"127.0.0.1:{server.port}", "-tls1_2"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        assert client.stdin is not None
        assert client.stdout is not None
        said = bytearray()
        try:
            await client.stdin.send_all(b"hello\n")
            with trio.fail_after(10):
                while b"hello" not in said.split(b"---")[-1]:  # the echo, after the banner
                    said += await client.stdout.receive_some(65536)
                await client.stdin.send_all(b"R\n")
                while chunk := await client.stdout.receive_some(65536):
                    said += chunk
                await client.wait()  # it ends, told, with its input still open
        finally:
            if client.returncode is None:
                client.kill()
            await client.wait()
            await client.stdin.aclose()
    assert b"no renegotiation" in said


@pytest.fixture(scope="session")
def tls_load(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The benchmark's TLS load generator, built here: its `keyupdate` mode is the flood."""
    cc = require_tool("cc")
    if not Path("/usr/include/openssl/ssl.h").exists():
        if os.environ.get("CI") == "true":
            pytest.fail("OpenSSL's headers are missing, but CI must install them (.ci/run)")
        pytest.skip("OpenSSL's headers (libssl-dev) are not installed")
    binary = tmp_path_factory.mktemp("c") / "tls_load"
    source = Path(__file__).parent.parent / "scripts" / "bench" / "tls_load.c"
    subprocess.run(
        [cc, "-O2", "-o", str(binary), str(source), "-lssl", "-lcrypto", "-lpthread"], check=True
    )
    return binary


@pytest.mark.parametrize(("data", "detail"), [(0, "tls_unread"), (1, None)])
async def test_a_keyupdate_flood_that_never_reads_ends_with_bounded_memory(
    tls_load: Path, data: int, detail: str | None
) -> None:
    """TLS 1.3 KeyUpdates asking for ours, as fast as the socket takes them, never reading
    (issue 24, 5): each asks the server to send one, which piled up in its TLS buffer (RSS
    40 -> 156 MB in 60 s, and --idle-timeout 2 did not end it for 13 s). Now TLS's own records
    are bounded (pure KeyUpdates: `stalled` with the `tls_unread` detail) and the echo of
    data with them is the echo's (`stalled` once none of it is taken for the idle timeout)."""
    async with server_process("--tls", "--idle-timeout", "2", "--quiet") as server:
        before = rss(server.process.pid)
        with trio.fail_after(90):
            flood = await trio.run_process(
                [str(tls_load), "keyupdate", "127.0.0.1", str(server.port), "60", str(data)],
                capture_stdout=True, capture_stderr=True, check=False,
            )  # fmt: skip
        assert flood.returncode == 0, flood.stderr
        told = json.loads(flood.stdout)
        assert told["ended"] == "server", told  # not its 60 s deadline
        assert told["key_updates"] > 1000, told
        ended = json.loads(await server.log.until('"server.disconnected"'))
        assert (ended["reason"], (ended["detail"] or {}).get("code")) == ("stalled", detail)
        assert rss(server.process.pid) - before < 16 << 20
        # And the server still serves everyone else.
        result = await run_client(
            "--port", str(server.port), "--tls", "--tls-insecure", stdin=b"after the flood\n"
        )
        assert result.stdout == b"after the flood\n", result.stderr
