"""Fixtures for the runnable examples under examples/: real servers, real Node.js."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.examples.shops import EXAMPLES

NODE_EXAMPLE = EXAMPLES / "node"


def _npm_ci(folder: Path) -> None:
    """Install the example's locked dependencies once (npm ci), under a file lock so
    two test processes on one checkout do not install into the same folder at once."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise RuntimeError(
            "the Node.js example needs node >= 20 and npm on PATH (apt-get install nodejs npm)"
        )
    with open(folder / ".npm-ci.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = folder / "node_modules" / ".package-lock.json"
        lockfile = folder / "package-lock.json"
        if stamp.exists() and stamp.stat().st_mtime >= lockfile.stat().st_mtime:
            return
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=240,
        )
        if done.returncode != 0:
            raise RuntimeError(f"npm ci failed in {folder}:\n{done.stdout}\n{done.stderr}")


@pytest.fixture(scope="session")
def node_example() -> Path:
    """examples/node with its npm dependencies installed."""
    _npm_ci(NODE_EXAMPLE)
    return NODE_EXAMPLE


@pytest.fixture
def base_env() -> dict[str, str]:
    """The test process's environment without any FASHIONAI_* variable of the caller's."""
    return {k: v for k, v in os.environ.items() if not k.startswith("FASHIONAI_")}
