#!/usr/bin/env bash
# Check an echo server across machines. A thin front: the logic is Python in the package.
#
#   scripts/remote_check.sh HOST PORT [--json] [--timeout S] [--pings N]
#       probe a server that already runs at HOST:PORT (exit status 0: every required probe passed)
#   scripts/remote_check.sh --ssh USER@HOST [--json] ...
#       start a trio-echo server on HOST over ssh (free port), check it from here, stop it
#   scripts/remote_check.sh --simulate
#       (root) build a local / VM / remote network of namespaces and run the lab's matrix
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${TRIO_ECHO_PYTHON:-}
if [ -z "$python" ]; then
  if [ -x "$repo/.venv/bin/python" ]; then python="$repo/.venv/bin/python"; else python=python3; fi
fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
case "${1:-}" in
  --simulate)
    shift
    if [ "$(id -u)" -ne 0 ]; then
      # Said here, before Python (which an unprivileged user may not be able to run), in
      # the language gettext would choose: --lang, else LANGUAGE, LC_ALL, LC_MESSAGES, LANG.
      lang=${LANGUAGE:-${LC_ALL:-${LC_MESSAGES:-${LANG:-}}}}
      prev=""
      for arg in "$@"; do [[ $prev == --lang ]] && lang=$arg; [[ $arg == --lang=* ]] && lang=${arg#--lang=}; prev=$arg; done
      if [[ $lang == ru* ]]; then
        echo "remote_check.sh --simulate: ошибка: нужны права root, чтобы создавать сетевые пространства имён (запустите через sudo)" >&2
      else
        echo "remote_check.sh --simulate: error: needs root, to create network namespaces (run it with sudo)" >&2
      fi
      exit 1
    fi
    exec "$python" -m trio_echo.lab "$@" ;;
  *) exec "$python" -m trio_echo.check "$@" ;;
esac
