"""Russian: every message translated, placeholders kept, plural forms right, the language
chosen by --lang or the environment, and machines' fields untouched by it."""

from __future__ import annotations

import gettext
import json
import os
import re
import shlex
import signal
import string
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.conftest import require_tool
from tests.processes import CLIENT, PATIENCE, run_client, server_process
from tests.test_events import ALL, sample
from tests.test_terminal import Terminal
from trio_echo import cli, i18n
from trio_echo.i18n import N_
from trio_echo.rendering import count_bytes, count_clients, explain, render_json, render_text

CATALOG = i18n.LOCALE_DIR / "ru" / "LC_MESSAGES" / "trio_echo.po"
CYRILLIC = re.compile("[а-яА-ЯёЁ]")


@pytest.fixture
def russian() -> Iterator[None]:
    i18n.use("ru")
    try:
        yield
    finally:
        i18n.use()


def extracted(tmp_path: Path) -> Path:
    """The messages in the source today, as xgettext finds them (the keywords of i18n)."""
    template = tmp_path / "now.pot"
    package = Path(i18n.__file__).parent
    subprocess.run(
        [require_tool("xgettext"), "--language=Python", "--from-code=UTF-8", "-o", str(template),
         *[f"--keyword={k}" for k in i18n.KEYWORDS],
         *sorted(str(p) for p in package.rglob("*.py"))],
        check=True,
    )  # fmt: skip
    return template


def entries(po: Path) -> list[tuple[str, list[str], list[str], str]]:
    """(msgid, [msgid_plural], [msgstr...], flags) of each message, header left out, read by
    msgcat's own parser so as not to trust ours: msgcat writes a canonical form."""
    canonical = subprocess.run(
        [require_tool("msgcat"), "--no-wrap", "--sort-output", str(po)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    found = []
    for block in canonical.split("\n\n"):
        fields: dict[str, list[str]] = {}
        flags = ""
        for line in block.splitlines():
            if line.startswith("#,"):
                flags = line
            match = re.match(r'(msgid_plural|msgid|msgstr(?:\[\d\])?) "(.*)"$', line)
            if match:
                fields.setdefault(match.group(1).split("[")[0], []).append(
                    match.group(2).encode().decode("unicode_escape").encode("latin-1").decode()
                )
        if fields.get("msgid", [""])[0]:
            found.append(
                (fields["msgid"][0], fields.get("msgid_plural", []), fields["msgstr"], flags)
            )
    return found


def placeholders(text: str) -> list[str]:
    """The {fields} (with their format specs) and %(name)s of a message, sorted."""
    braces = [f"{name}:{spec}" for _, name, spec, _ in string.Formatter().parse(text) if name]
    return sorted(braces + re.findall(r"%\(\w+\)\w", text))


def test_every_message_in_the_source_has_a_russian_translation(tmp_path: Path) -> None:
    wanted = {msgid for msgid, *_ in entries(extracted(tmp_path))}
    translated = {
        msgid: msgstrs
        for msgid, _plural, msgstrs, flags in entries(CATALOG)
        if "fuzzy" not in flags and all(msgstrs)
    }
    missing = sorted(wanted - translated.keys())
    assert not missing, f"no Russian for {len(missing)} messages: {missing[:5]}"
    # And no English left standing in for Russian: each has a Cyrillic letter, bar labels
    # and terms that are the same in both (TLS, the probe tls).
    same = {msgid for msgid, msgstrs in translated.items() if not CYRILLIC.search(msgstrs[0])}
    assert same <= {"TLS", "tls"}, same


def test_placeholders_are_the_same_in_both_languages() -> None:
    for msgid, plural, msgstrs, _flags in entries(CATALOG):
        for msgstr in msgstrs:
            assert placeholders(msgstr) == placeholders(msgid), (msgid, msgstr)
        if plural:
            assert placeholders(plural[0]) == placeholders(msgid)
            assert len(msgstrs) == 3, msgid  # Russian has three forms


def test_the_compiled_catalog_is_the_catalog(tmp_path: Path) -> None:
    """The committed .mo is what msgfmt makes of the committed .po today (and msgfmt
    --check finds no error in it: format strings, plural forms, header)."""
    fresh = tmp_path / "fresh.mo"
    subprocess.run([require_tool("msgfmt"), "--check", "-o", str(fresh), str(CATALOG)], check=True)
    with fresh.open("rb") as made, CATALOG.with_suffix(".mo").open("rb") as shipped:
        made_catalog = gettext.GNUTranslations(made)._catalog  # type: ignore[attr-defined]
        shipped_catalog = gettext.GNUTranslations(shipped)._catalog  # type: ignore[attr-defined]
    assert shipped_catalog == made_catalog


@pytest.mark.parametrize(
    ("count", "clients", "bytes_"),
    [
        (0, "0 клиентов", "0 байт"),
        (1, "1 клиент", "1 байт"),
        (2, "2 клиента", "2 байта"),
        (5, "5 клиентов", "5 байт"),
        (11, "11 клиентов", "11 байт"),
        (21, "21 клиент", "21 байт"),
        (22, "22 клиента", "22 байта"),
        (25, "25 клиентов", "25 байт"),
        (101, "101 клиент", "101 байт"),
        (111, "111 клиентов", "111 байт"),
    ],
)
def test_russian_plural_forms(russian: None, count: int, clients: str, bytes_: str) -> None:
    assert (count_clients(count), count_bytes(count)) == (clients, bytes_)


def test_seconds_too(russian: None) -> None:
    assert i18n._("{s:g} s").format(s=2.5) == "2.5 с"


@pytest.mark.parametrize("cls", ALL, ids=lambda cls: cls.__name__)
def test_every_event_speaks_russian_and_machines_read_the_same(russian: None, cls: type) -> None:
    event = sample(cls)
    text = render_text(event, 0.0)
    record = json.loads(render_json(event, 0.0))
    assert CYRILLIC.search(explain(event)), explain(event)
    assert record["message"] == explain(event)
    i18n.use("en")
    english = json.loads(render_json(event, 0.0))
    assert not CYRILLIC.search(english["message"])
    # Same keys, same event name, same machine values; only the message differs.
    assert {k: v for k, v in record.items() if k != "message"} == {
        k: v for k, v in english.items() if k != "message"
    }
    # The text label keeps its column: the sentence starts where the English one does.
    label = text.split(" ", 1)[1][: 12 + 1]
    assert len(label) == 13, text
    assert label.endswith(" "), text


def _env(**values: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")
    }
    return {**env, **values}


def _help(env: dict[str, str], *args: str) -> str:
    return subprocess.run(
        [*CLIENT, *args, "--help"], env=env, capture_output=True, text=True, check=True
    ).stdout


def test_lang_alone_switches_the_language() -> None:
    said = _help(_env(LANG="ru_RU.UTF-8"))
    assert said.startswith("использование: trio-echo-client")
    assert "имя или адрес сервера" in said
    assert "(default:" not in said


@pytest.mark.parametrize("lang", ["xx_YY.UTF-8", "de_DE.UTF-8", "C", "POSIX", "C.UTF-8"])
def test_any_other_locale_is_english_without_an_error(lang: str) -> None:
    done = subprocess.run(
        [*CLIENT, "--help"], env=_env(LANG=lang), capture_output=True, text=True, check=False
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith("usage: trio-echo-client")


def test_the_option_beats_the_environment() -> None:
    assert _help(_env(LANG="ru_RU.UTF-8"), "--lang", "en").startswith("usage:")
    assert _help(_env(LANG="en_US.UTF-8"), "--lang", "ru").startswith("использование:")
    assert _help(_env(LANG="en_US.UTF-8", LANGUAGE="ru")).startswith("использование:")


@pytest.mark.parametrize(
    "program", ["trio_echo.server", "trio_echo.client", "trio_echo.check", "trio_echo.lab",
                "trio_echo.faulty_link"],
)  # fmt: skip
def test_every_program_takes_lang(program: str) -> None:
    said = subprocess.run(
        [sys.executable, "-m", program, "--lang", "ru", "--help"],
        env=_env(), capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert said.startswith("использование:")
    assert "показать эту справку и выйти" in said
    bad = subprocess.run(
        [sys.executable, "-m", program, "--lang", "ru", "--no-such-option"],
        env=_env(), capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert bad.returncode == 2
    assert ": ошибка: " in bad.stderr.splitlines()[-1]


async def test_a_russian_session_in_a_real_terminal(tmp_path: Path) -> None:
    """Server and client in Russian (the client typed at in tmux, the way a student runs
    it): Russian sentences on the terminal and in the server's log, Cyrillic echoed exactly."""
    line = "привет, сервер! ёжик 123"
    async with server_process(env=_env(LANG="ru_RU.UTF-8")) as server:
        terminal = Terminal(tmp_path)
        after = tmp_path / "after"
        client = " ".join(shlex.quote(a) for a in CLIENT)
        script = (
            f"env -u LANGUAGE LANG=ru_RU.UTF-8 {client} --port {server.port}; "
            f"echo status=$? > {after}; " + terminal.finished
        )
        async with terminal.running(script) as pane:
            await server.log.until('"server.connected"')
            await terminal.tmux("send-keys", "-t", "echo", "-l", line)
            await terminal.tmux("send-keys", "-t", "echo", "Enter")
            await terminal.until_shown(pane, line.encode(), count=2)  # typed, and echoed
            await terminal.tmux("send-keys", "-t", "echo", "exit", "Enter")
            ended = json.loads(await server.log.until('"server.disconnected"'))
            with trio.fail_after(PATIENCE):
                await terminal.tmux("wait-for", "finished")
            await terminal.until_shown(pane, "отключено: вы отправили `exit`".encode(), count=1)
    shown = bytes(terminal.output).decode("utf-8", "replace")
    for said in (
        "ПОДКЛЮЧАЮСЬ",
        "подключаюсь к 127.0.0.1",
        "отправлено серверу",
        "получено обратно",
    ):
        assert said in shown
    assert (await trio.Path(after).read_text()).strip() == "status=0"
    assert (ended["event"], ended["reason"]) == ("server.disconnected", "exit")
    assert ended["message"].startswith("клиент №1 отключился: клиент прислал строку `exit`")
    assert ended["bytes_in"] == ended["bytes_out"] >= len(line.encode()) + 1


# What differs from one run to the next whatever the language: times, ports, the ephemeral
# certificate, and the one value that is meant to change with it, `message`.
VOLATILE = {"time", "message", "pid", "port", "peer", "local", "duration", "uptime"}
VOLATILE |= {"tls_fingerprint", "fingerprint", "not_after", "subject", "issuer"}


async def a_session_logged_in(lang: str) -> tuple[list[dict[str, object]], list[str]]:
    """A TLS server and client, both in `lang`: one session that ends with `exit`, and one
    plain-text connection the server refuses (an explained `detail`). Their JSON records,
    less what differs between runs anyway, and their messages."""
    async with server_process("--lang", lang, "--tls", "--quiet") as server:
        client = await run_client(
            "--lang", lang, "--port", str(server.port), "--tls", "--tls-insecure",
            "--log-format", "json", "--quiet", stdin=b"hello\nexit\n",
        )  # fmt: skip
        await server.log.until('"server.disconnected"')
        async with await trio.open_tcp_stream("127.0.0.1", server.port) as plain:
            await plain.send_all(b"GET / HTTP/1.1\r\n\r\n")
            await server.log.until('"tls_error"')
        server.process.send_signal(signal.SIGTERM)
        lines = await server.log.rest()
    lines = [*lines, *client.stderr.decode().splitlines()]
    records = [json.loads(line) for line in lines if line.startswith("{")]
    kept = [{k: v for k, v in record.items() if k not in VOLATILE} for record in records]
    return kept, [str(record["message"]) for record in records]


async def test_json_values_do_not_depend_on_the_language() -> None:
    english, said_in_english = await a_session_logged_in("en")
    russian, said_in_russian = await a_session_logged_in("ru")
    assert english == russian
    assert {"server.starting", "client.tls_established", "server.stopped"} <= {
        str(record["event"]) for record in english
    }
    [refused] = [r for r in english if r.get("reason") == "tls_error"]
    assert refused["detail"] == {"code": "not_tls", "what": {"code": "http"}, "quoted": (
        '"GET / HTTP/1.1\\r\\n\\r\\n"'
    )}  # fmt: skip
    assert not any(CYRILLIC.search(message) for message in said_in_english)
    assert all(CYRILLIC.search(message) for message in said_in_russian), said_in_russian


def test_an_unexpected_system_error_is_one_line_in_one_language_naming_its_file(
    russian: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was `trio-echo-server: ошибка: unexpected error: No such file or directory`: the prefix
    translated, the rest not, and no word of which file (issue 24, 3)."""

    async def fails() -> None:
        await trio.lowlevel.checkpoint()
        raise FileNotFoundError(2, "No such file or directory", "/etc/trio-echo/missing.pem")

    status = cli.run_async(fails, "trio-echo-server", N_("unexpected error"))
    line = capsys.readouterr().err.strip()
    assert status == 1
    assert line == (
        "trio-echo-server: ошибка: непредвиденная ошибка: нет такого файла или каталога: "
        "/etc/trio-echo/missing.pem"
    )
