"""Starting the pipeline's parts as local processes: for the demo, tests and benchmarks.

Every process started here is a real program (`python -m fashionai_pipeline.sandbox`,
`python -m fashionai_pipeline.worker.cli worker`, `redis-server`), on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import redis

from fashionai_pipeline.producers.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_answers(url: str, timeout: float = 0.5) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout).ping())
    except redis.RedisError:
        return False


def settings_env(settings: Settings) -> dict[str, str]:
    """FASHIONAI_* variables that recreate `settings` in a child process."""
    env: dict[str, str] = {}
    for name, dumped in settings.model_dump(mode="json").items():
        if dumped is None:  # unset optional settings stay unset ("None" would be a value)
            continue
        value = dumped
        if name == "app_token":
            value = settings.app_token.get_secret_value()
        elif name == "tenants":
            value = json.dumps(
                {
                    tenant: {
                        **cfg.model_dump(mode="json", exclude_none=True),
                        "app_token": cfg.app_token.get_secret_value(),
                    }
                    for tenant, cfg in settings.tenants.items()
                }
            )
        env[f"FASHIONAI_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


@dataclass
class Proc:
    """A child process that is stopped (TERM, then KILL) when the owner is done."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: str
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.popen.pid, sig)

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode

    def output(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as fh:
            return fh.read()


def _spawn(name: str, argv: Sequence[str], env: Mapping[str, str] | None, log_dir: str) -> Proc:
    log_path = os.path.join(log_dir, f"{name}-{time.monotonic_ns()}.log")
    full_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    with open(log_path, "wb") as log:
        popen = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=full_env, start_new_session=True
        )
    return Proc(name, popen, log_path)


def _wait_for(proc: Proc, text: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = proc.output()
        for line in out.splitlines():
            if text in line:
                return line
        if not proc.alive():
            break
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name} did not report {text!r}; its output:\n{proc.output()[-3000:]}")


def start_sandbox(token: str, *, log_dir: str, knobs: Sequence[str] = (), ready_within: float = 20.0) -> Proc:
    """Start `python -m fashionai_pipeline.sandbox` on a free port.

    `proc.extra["url"]` is its endpoint URL, `proc.extra["base_url"]` its root.
    `ready_within`: seconds it may take to listen (`--warm` computes every list first).
    """
    proc = _spawn(
        "sandbox",
        [sys.executable, "-m", "fashionai_pipeline.sandbox", "--port", "0", "--token", token, *knobs],
        None,
        log_dir,
    )
    try:
        line = _wait_for(proc, "sandbox listening on", ready_within)
    except BaseException:
        proc.stop()
        raise
    base = line.split("sandbox listening on", 1)[1].strip()
    proc.extra["base_url"] = base
    proc.extra["url"] = base + "/api/v1/products/protected/recommendation"
    return proc


def start_worker(
    settings: Settings, *, log_dir: str, args: Sequence[str] = ("-c", "2"), wait_ready: bool = True
) -> Proc:
    """Start `python -m fashionai_pipeline.worker.cli worker`, `settings` passed through the environment."""
    # A unique node name unless one is given: on RabbitMQ a node's remote-control
    # queue is exclusive, and a node that just died (or was SIGKILLed) may still
    # hold it for a moment, which makes a same-named successor fail to start.
    if not any(a == "-n" or a.startswith(("-n", "--hostname")) for a in args):
        args = [*args, "-n", f"fashionai-{os.getpid()}-{time.monotonic_ns()}@%h"]
    # INFO at least: readiness is read from the "pump started" line.
    argv = [
        sys.executable,
        "-m",
        "fashionai_pipeline.worker.cli",
        "worker",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "--loglevel",
        "DEBUG" if settings.log_level == "DEBUG" else "INFO",
        *args,
    ]
    proc = _spawn("worker", argv, settings_env(settings), log_dir)
    if wait_ready:
        try:
            _wait_for(proc, "pump started", 60)
        except BaseException:
            proc.stop()
            raise
    return proc


def start_redis(*, log_dir: str, port: int | None = None) -> tuple[Proc, str]:
    """Start a private redis-server (no persistence) on `port` or a free one.

    Raises FileNotFoundError without a redis-server binary. Restarting on the port
    of one that was stopped gives an empty Redis at the same URL, as a cache
    restarted without persistence would be.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server")
    port = port or free_port()
    proc = _spawn(
        "redis",
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        None,
        log_dir,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while not redis_answers(url):
        if time.monotonic() > deadline or not proc.alive():
            raise RuntimeError(f"private redis-server did not start:\n{proc.output()[-2000:]}")
        time.sleep(0.05)
    return proc, url


def scratch_dir(prefix: str = "fashionai-") -> str:
    return tempfile.mkdtemp(prefix=prefix)
