"""The operator's port (`--metrics`): /metrics in the Prometheus text format (read back by
prometheus_client's own parser, and scraped by a real Prometheus), /healthz, /readyz (503
from the moment a drain begins), /info (which server, and the asking client)."""

from __future__ import annotations

import json
import subprocess
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Recorder, require_tool
from tests.processes import free_port, run_client, server_process
from tests.test_sockets import exchange
from trio_echo.events import Disconnected, Rejected
from trio_echo.server import EchoServer, HttpConfig, MetricsConfig, ServerConfig


@asynccontextmanager
async def operated(recorder: Recorder, **options: Any) -> AsyncIterator[EchoServer]:
    config = ServerConfig(
        port=0, shutdown_timeout=2, metrics=MetricsConfig(port=0), name="backend-7", **options
    )
    async with trio.open_nursery() as nursery:
        server = EchoServer(config, emit=recorder)
        await nursery.start(server.run)
        yield server
        server.stop()


async def get(address: tuple[str, int], path: str) -> tuple[int, str]:
    """A GET on the operator's port: the status and the body."""
    stream = await trio.open_tcp_stream(*address)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        answer = b""
        with trio.fail_after(10):
            while data := await stream.receive_some(65536):
                answer += data
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, read by prometheus_client's own parser."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


async def test_metrics_count_connections_bytes_durations_and_rejections(
    recorder: Recorder,
) -> None:
    async with operated(recorder, max_connections=2, http=HttpConfig(port=0)) as server:
        host, port = server.addresses[0]
        for message in (b"one\n", b"two two\n"):
            stream = await trio.open_tcp_stream(host, port)
            async with stream:
                assert await exchange(stream, message) == message
        await recorder.wait_for(Disconnected, 2)
        held = [await trio.open_tcp_stream(host, port) for _ in range(2)]
        for stream in held:  # an echo each, the connection kept open
            await stream.send_all(b"held\n")
            assert await stream.receive_some(5) == b"held\n"
        extra = await trio.open_tcp_stream(host, port)  # past --max-connections
        await recorder.wait_for(Rejected)
        status, text = await get(server.metrics_addresses[0], "/metrics")
        for stream in [*held, extra]:
            await stream.aclose()
    assert status == 200
    found = samples(text)
    assert found["trio_echo_connections_accepted_total", (("transport", "tcp"),)] == 4
    ended = found["trio_echo_connections_ended_total", (("reason", "eof"), ("transport", "tcp"))]
    assert ended == 2
    assert found["trio_echo_connections_active", (("transport", "tcp"),)] == 2
    # Ended connections' bytes, and the live ones' so far: 4 + 8 + 5 + 5.
    assert found["trio_echo_bytes_received_total", (("transport", "tcp"),)] == 22
    assert found["trio_echo_bytes_sent_total", (("transport", "tcp"),)] == 22
    count = found["trio_echo_session_duration_seconds_count", (("transport", "tcp"),)]
    assert count == 2
    rejected = found["trio_echo_connections_rejected_total", (("reason", "max_connections"),)]
    assert rejected == 1
    build = [key for key in found if key[0] == "trio_echo_build_info"]
    assert ("name", "backend-7") in build[0][1]
    assert found["trio_echo_process_resident_memory_bytes", ()] > 0


async def test_readyz_fails_from_the_moment_a_drain_begins(recorder: Recorder) -> None:
    async with operated(recorder, drain_timeout=5) as server:
        address = server.metrics_addresses[0]
        assert await get(address, "/healthz") == (200, "ok\n")
        assert (await get(address, "/readyz"))[0] == 200
        server.stop()  # a drain first: every client still served, health checks fail
        assert (await get(address, "/readyz"))[0] == 503
        assert (await get(address, "/healthz"))[0] == 200
        host, port = server.addresses[0]
        stream = await trio.open_tcp_stream(host, port)  # still served while draining
        async with stream:
            assert await exchange(stream, b"still\n") == b"still\n"
        server.abort()


async def test_info_says_which_server_and_what_it_saw_of_the_client(recorder: Recorder) -> None:
    async with operated(recorder) as server:
        status, body = await get(server.metrics_addresses[0], "/info")
    info = json.loads(body)
    assert status == 200
    assert (info["name"], info["version"]) == ("backend-7", "0.1.0")
    assert info["client"]["address"].startswith("127.0.0.1:")
    assert info["uptime"] >= 0


# ---- a real Prometheus ----------------------------------------------------------------------


@asynccontextmanager
async def prometheus(tmp_path: Path, target: str) -> AsyncIterator[int]:
    """Debian's Prometheus on loopback, scraping `target` every second; its port."""
    binary = require_tool("prometheus")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"scrape_configs:\n  - job_name: echo\n    static_configs:\n"
        f"      - targets: ['{target}']\n"
    )
    process = await trio.lowlevel.open_process(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield port
    finally:
        process.terminate()  # ours, by its PID
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


async def query(port: int, promql: str) -> list[dict[str, Any]]:
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    except OSError:
        return []  # not listening yet
    path = "/api/v1/query?query=" + urllib.parse.quote(promql)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        answer = b""
        while data := await stream.receive_some(65536):
            answer += data
    _, _, body = answer.partition(b"\r\n\r\n")
    try:
        result: list[dict[str, Any]] = json.loads(body)["data"]["result"]
    except (ValueError, KeyError):
        return []
    return result


async def test_a_real_prometheus_scrapes_the_series_of_what_was_echoed(tmp_path: Path) -> None:
    async with server_process("--metrics", "0", "--quiet", "--name", "scraped") as server:
        line = await server.log.until('"transport": "metrics"')
        metrics_port = json.loads(line)["port"]
        for n in range(3):
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            async with stream:
                assert await exchange(stream, b"x" * (n + 1)) == b"x" * (n + 1)
        for _ in range(3):
            await server.log.until('"server.disconnected"')
        async with prometheus(tmp_path, f"127.0.0.1:{metrics_port}") as port:
            wanted = 'trio_echo_connections_ended_total{reason="eof",transport="tcp"}'
            result: list[dict[str, Any]] = []
            with trio.fail_after(60):
                while not result:  # Prometheus's own pace: it scrapes every second
                    result = await query(port, wanted)
                    await trio.sleep(0.5)
            received = await query(port, 'trio_echo_bytes_received_total{transport="tcp"}')
            named = await query(port, "trio_echo_build_info")
    assert float(result[0]["value"][1]) == 3
    assert result[0]["metric"]["job"] == "echo"
    assert float(received[0]["value"][1]) == 1 + 2 + 3
    assert named[0]["metric"]["name"] == "scraped"


async def test_the_clients_info_asks_which_backend_answered() -> None:
    async with server_process("--http", "0", "--name", "backend-b") as server:
        port = json.loads(await server.log.until('"transport": "http"'))["port"]
        asked = await run_client("--port", str(port), "--info")
        wrong = await run_client("--port", str(server.port), "--info")  # the echo port
    assert asked.returncode == 0, asked.stderr
    info = json.loads(asked.stdout)
    assert (info["name"], info["client"]["address"][:10]) == ("backend-b", "127.0.0.1:")
    assert wrong.returncode == 1
    assert b"no /info at 127.0.0.1:" in wrong.stderr


async def test_with_workers_each_worker_serves_its_own_metrics() -> None:
    async with server_process("--workers", "2", "--metrics", "0", "--quiet") as server:
        lines = [await server.log.until('"transport": "metrics"') for _ in range(2)]
        ports = {json.loads(line)["worker"]: json.loads(line)["port"] for line in lines}
        answers = [await get(("127.0.0.1", port), "/metrics") for port in ports.values()]
    assert sorted(ports) == [1, 2]
    assert len(set(ports.values())) == 2
    assert all(status == 200 and "trio_echo_build_info" in text for status, text in answers)
