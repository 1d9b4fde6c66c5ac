#!/usr/bin/env bash
# The main job on a fresh machine: create the venv, install, run the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh all
exec .venv/bin/fashionai-pipeline demo "$@"
