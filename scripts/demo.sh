#!/usr/bin/env bash
# The main job on a fresh machine: create the venv, install, run the demo.
# The demo uses the Redis at FASHIONAI_REDIS_URL (default 127.0.0.1:6379) or starts
# a private redis-server; on a machine with neither, install the binary first.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh all
if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null && ! command -v redis-server >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  fi
fi
exec .venv/bin/fashionai-pipeline demo "$@"
