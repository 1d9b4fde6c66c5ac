#!/usr/bin/env bash
# The test command: README, .ci/run and developers all run exactly this.
# Lint, types, then the tests under branch coverage (subprocesses included; the
# threshold is in pyproject.toml, [tool.coverage.report] fail_under).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh dev
bash scripts/services.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
export COVERAGE_FILE="$PWD/.coverage"
rm -f .coverage .coverage.*
status=0
.venv/bin/coverage run -m pytest "$@" || status=$?
.venv/bin/coverage combine -q --keep 2>/dev/null || .venv/bin/coverage combine -q
.venv/bin/coverage report || { [ "$status" = 0 ] && status=3; }
exit "$status"
