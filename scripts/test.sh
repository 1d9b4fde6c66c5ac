#!/usr/bin/env bash
# The test command: README, .ci/run and developers all run exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh dev
bash scripts/services.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
