"""The CLI's answer when the state store is not configured (RabbitMQ broker, no FASHIONAI_STATE_URL)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASHIONAI_")}
    env["FASHIONAI_BROKER_URL"] = "amqp://guest:guest@127.0.0.1:5672//"
    return subprocess.run(
        [sys.executable, "-m", "fashionai_pipeline.worker.cli", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("argv", "code"), [(("worker", "-c", "1"), 2), (("dlq", "list"), 2), (("stats",), 2)]
)
def test_commands_that_need_the_state_store_say_so_without_a_traceback(argv, code):
    out = _cli(*argv)
    assert out.returncode == code, out.stderr[-2000:]
    assert "FASHIONAI_STATE_URL: required when the broker is not Redis" in out.stderr
    assert "Traceback" not in out.stderr
