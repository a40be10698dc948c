"""The page in a real browser: Debian's Chromium, headless, driven by Playwright (no browser
download: the system's own Chromium). A person's session: open `/`, type two lines, see both
echoes and their round-trip times, type `exit`, see the summary; over wss too."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest
import trio

from tests.conftest import require_tool
from tests.processes import ServerProcess, server_process

FLAGS = ["--headless", "--no-sandbox", "--disable-background-networking", "--disable-gpu",
         "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
TIMEOUT_MS = 15_000  # for each step in the page: a stuck browser ends the test, not CI


def browser_session(
    chromium: str, url: str, lines: list[str], shot: Path | None, tls: bool
) -> dict[str, object]:
    """In a thread (Playwright's sync API): the session a person would have; what it saw."""
    from playwright.sync_api import sync_playwright

    flags = [*FLAGS, *(["--ignore-certificate-errors"] if tls else [])]
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium, args=flags)
        try:
            page = browser.new_page(viewport={"width": 800, "height": 440})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(url)
            page.wait_for_selector('#status[data-state="open"]')
            opened = page.inner_text("#status")
            for n, line in enumerate(lines, start=1):
                page.fill("#line", line)
                page.press("#line", "Enter")
                page.wait_for_selector(f"#log tbody tr:nth-child({n})[data-rtt]")
            rows = [
                [cell.inner_text() for cell in row.query_selector_all("td")]
                for row in page.query_selector_all("#log tbody tr")
            ]
            page.fill("#line", "exit")
            page.press("#line", "Enter")
            page.wait_for_selector("#summary:not([hidden])")
            if shot is not None:
                page.screenshot(path=str(shot))
            return {
                "opened": opened,
                "rows": rows,
                "summary": page.inner_text("#summary-text"),
                "status": page.inner_text("#status"),
                "messages": page.get_attribute("#summary", "data-messages"),
            }
        finally:
            browser.close()


async def http_port(server: ServerProcess) -> int:
    line = await server.log.until('"transport": "http"')
    return int(json.loads(line)["port"])


@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss"])
async def test_a_person_in_a_browser_sees_each_echo_its_rtt_and_the_summary(
    tls: bool, tmp_path: Path
) -> None:
    chromium = require_tool("chromium")
    lines = ["hello", "wörld \x1b[31m ✓"]
    options = ["--http", "0", *(["--tls"] if tls else [])]
    async with server_process(*options) as server:
        port = await http_port(server)
        url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/?lang=en"
        shot = tmp_path / "page.png"
        with trio.fail_after(90):
            seen = await trio.to_thread.run_sync(browser_session, chromium, url, lines, shot, tls)
        server.process.send_signal(signal.SIGTERM)
        events = [json.loads(line) for line in await server.log.rest() if line]
        await server.process.wait()
    assert "Connected to ws" in str(seen["opened"])
    rows = seen["rows"]
    assert isinstance(rows, list)
    # The control character is shown as an escape, never obeyed; each echo equals its line.
    assert [row[:2] for row in rows] == [["hello", "hello"], [r"wörld \u001b[31m ✓"] * 2]
    assert all(re.fullmatch(r"\d+\.\d ms", row[2]) for row in rows), rows
    assert seen["messages"] == "3"  # the two lines and `exit`
    assert "3 messages echoed" in str(seen["summary"])
    assert "0 differed" in str(seen["summary"])
    assert "code 1000" in str(seen["status"])
    [socket] = [e["conn"] for e in events if e["event"] == "server.websocket_opened"]
    [ended] = [e for e in events if e["event"] == "server.disconnected" and e["conn"] == socket]
    text = sum(len(line.encode()) for line in [*lines, "exit"])
    assert (ended["reason"], ended["bytes_in"], ended["bytes_out"]) == ("exit", text, text)
    requests = {e["target"]: e["status"] for e in events if e["event"] == "server.http_request"}
    requests.pop("/favicon.ico", None)  # a browser's own question: 404
    assert requests == {"/?lang=en": 200, "/echo.css": 200, "/echo.js": 200, "/ws": 101}
    assert shot.stat().st_size > 10_000


async def test_the_page_speaks_russian_when_asked() -> None:
    chromium = require_tool("chromium")
    async with server_process("--http", "0") as server:
        port = await http_port(server)
        with trio.fail_after(90):
            seen = await trio.to_thread.run_sync(
                browser_session, chromium, f"http://127.0.0.1:{port}/?lang=ru", ["да"], None, False
            )
        server.process.send_signal(signal.SIGTERM)
        await server.process.wait()
    assert "Подключено к ws" in str(seen["opened"])
    assert "Сообщений вернулось: 2" in str(seen["summary"])
