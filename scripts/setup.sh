#!/usr/bin/env bash
# Shared set-up for scripts/demo.sh and scripts/test.sh: a Python 3.11 venv in
# .venv with the project installed (editable) and the given extras.
# Usage: source scripts/setup.sh EXTRAS
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

extras="${1:-all}"
py=""
for candidate in python3.11 python3; do
  if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 11))'; then
    py="$candidate"; break
  fi
done
if [ -z "$py" ]; then
  echo "Python 3.11 or newer is needed (apt-get install python3.11 python3.11-venv)" >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
fi
stamp=".venv/.installed-$extras-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -e "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[$extras]"
  touch "$stamp"
fi
