"""The language of every human-readable message: English, or Russian for the lab's students.

Standard gettext. The catalogs are `locale/<lang>/LC_MESSAGES/trio_echo.po`, compiled to
`.mo` files that are committed beside them, as Django does: a wheel or an editable install
then needs no build step and no `msgfmt`; `tests/test_i18n.py` fails when a `.mo` is older
than its `.po` or a message has no translation. To add messages: `python -m trio_echo.i18n`
rewrites the template and the catalogs from the source (it needs GNU gettext's tools).

The language is `--lang` if a program was given it, else what gettext reads from the
environment (LANGUAGE, LC_ALL, LC_MESSAGES, LANG, in that order), else on Windows the
language of its interface (people there rarely set LANG); a language without a
catalog, or a locale that does not exist on the machine, is English. What machines read
never changes with it: JSON keys, event names, reason values, exit statuses.
"""

from __future__ import annotations

import gettext
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from trio_echo import capabilities

DOMAIN: Final = "trio_echo"
LOCALE_DIR: Final = Path(__file__).parent / "locale"
LANGUAGES: Final = ("en", "ru")

_translation: gettext.NullTranslations = gettext.NullTranslations()


# Where gettext looks for the language, in its order.
ENVIRONMENT: Final = ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")


def use(lang: str | None = None) -> None:
    """Speak `lang` from now on (None: the environment's choice, or where the environment
    says nothing, the language of Windows' own interface)."""
    global _translation
    if lang is None and not any(os.environ.get(name) for name in ENVIRONMENT):
        lang = capabilities.windows_ui_language()
    languages = None if lang is None else [lang]
    _translation = gettext.translation(DOMAIN, LOCALE_DIR, languages, fallback=True)


def language() -> str:
    """The language spoken now, as `--lang` names it."""
    return str(_translation.info().get("language", "en"))


def _(message: str) -> str:
    """`message` in the chosen language."""
    return _translation.gettext(message)


def N_(message: str) -> str:
    """Marks a message for the catalog where it is defined; `_` translates it where used."""
    return message


def ngettext(singular: str, plural: str, count: int) -> str:
    """The form for `count` (Russian has three: 1 байт, 3 байта, 25 байт)."""
    return _translation.ngettext(singular, plural, count)


def lang_from(argv: Sequence[str]) -> str | None:
    """`--lang` from a command line, read before the parser is built: its help is translated
    too. A bad value is left for the parser to refuse."""
    for index, arg in enumerate(argv):
        if arg == "--lang" and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith("--lang="):
            return arg.partition("=")[2]
    return None


def setup(argv: Sequence[str] | None) -> None:
    """The language for a program started with `argv` (None: sys.argv[1:]), and its
    standard output and error in UTF-8 (`capabilities.speak_utf8`)."""
    lang = lang_from(sys.argv[1:] if argv is None else argv)
    use(lang if lang in LANGUAGES else None)
    capabilities.speak_utf8()


use()

KEYWORDS: Final = ("_", "N_", "ngettext:1,2")


def update_catalogs() -> None:  # pragma: no cover - a maintainer's tool, needs gettext
    """Extract the messages, merge them into each catalog, compile: the `.pot`, the `.po`s
    (new messages empty, for a translator) and the `.mo`s."""
    import subprocess

    package = Path(__file__).parent
    template = LOCALE_DIR / f"{DOMAIN}.pot"
    sources = sorted(str(p.relative_to(package.parent)) for p in package.rglob("*.py"))
    keywords = [f"--keyword={k}" for k in KEYWORDS]
    subprocess.run(
        ["xgettext", "--language=Python", "--from-code=UTF-8", "--no-location", "--sort-output",
         "--no-wrap", "--add-comments=TRANSLATORS", *keywords, "-o", str(template), *sources],
        check=True, cwd=package.parent,
    )  # fmt: skip
    for lang in LANGUAGES[1:]:
        catalog = LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"
        subprocess.run(
            ["msgmerge", "--quiet", "--update", "--no-fuzzy-matching", "--backup=none", "--no-wrap",
             "--no-location", "--sort-output", str(catalog), str(template)],
            check=True,
        )  # fmt: skip
        subprocess.run(
            ["msgfmt", "--check", "-o", str(catalog.with_suffix(".mo")), str(catalog)], check=True
        )


if __name__ == "__main__":  # pragma: no cover
    update_catalogs()
