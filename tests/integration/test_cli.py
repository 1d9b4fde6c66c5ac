"""The console script: --help on every command, and the demo end to end."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

COMMANDS = [
    ["worker"],
    ["sandbox"],
    ["publish"],
    ["rankings", "get"],
    ["dlq", "list"],
    ["dlq", "show"],
    ["dlq", "replay"],
    ["dlq", "purge"],
    ["stats"],
    ["demo"],
    [],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "top")
def test_every_command_has_help(command):
    out = subprocess.run(
        [sys.executable, "-m", "fashionai_pipeline.worker.cli", *command, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert re.search(r"usage", out.stdout, re.IGNORECASE)


def _demo(env_overrides: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASHIONAI_")}
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "-m", "fashionai_pipeline.worker.cli", "demo", "--sessions", "15"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def _found(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    assert match is not None, f"{pattern!r} not in:\n{text}"
    return match.group(1)


def test_demo_runs_end_to_end_on_the_local_redis():
    out = _demo({})
    assert out.returncode == 0, out.stdout + out.stderr
    published = int(_found(r"published (\d+) events", out.stdout))
    cached = int(_found(r"cached rankings written\s+(\d+)", out.stdout))
    assert cached == published > 0
    assert re.search(r"latency p50 / p99\s+\d+ ms / \d+ ms", out.stdout)
    assert "stopped everything the demo started" in out.stdout


def test_demo_starts_a_private_redis_when_none_answers():
    out = _demo(
        {"FASHIONAI_REDIS_URL": "redis://127.0.0.1:1/1", "FASHIONAI_BROKER_URL": "redis://127.0.0.1:1/0"}
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "started a private redis-server" in out.stdout
    port = _found(r"private redis-server at redis://127.0.0.1:(\d+)", out.stdout)
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert f"--port {port}" not in ps  # stopped again


def test_demo_names_the_fix_without_redis(tmp_path):
    out = _demo(
        {
            "FASHIONAI_REDIS_URL": "redis://127.0.0.1:1/1",
            "FASHIONAI_BROKER_URL": "redis://127.0.0.1:1/0",
            "PATH": str(tmp_path),
        }
    )
    assert out.returncode == 2
    assert "no redis-server is on the PATH" in out.stderr and "FASHIONAI_REDIS_URL" in out.stderr
