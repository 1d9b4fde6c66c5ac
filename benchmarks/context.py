"""One benchmark run's shared state: names, connections, children, clean-up.

Every queue, tenant and node name of a run contains `bench-<run id>`, so the
run can remove exactly what it created (queues, bindings, rankings, counters,
unacked entries) and nothing else on a shared Redis.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis
from pydantic import SecretStr

from benchmarks.measure import descendants
from fashionai_pipeline.producers import keys
from fashionai_pipeline.producers.settings import Settings
from fashionai_pipeline.worker.local import Proc, scratch_dir, start_sandbox, start_worker

UPSTREAM_LATENCY_MS = 50
_T0 = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


class Sandbox:
    """A fresh `python -m fashionai_pipeline.sandbox` at 50 ms latency, and its control routes."""

    def __init__(self, proc: Proc) -> None:
        self.proc = proc
        self.url = proc.extra["url"]
        self._control = httpx.Client(base_url=proc.extra["base_url"], timeout=30)

    def requests(self) -> list[dict[str, Any]]:
        reply = self._control.get("/_sandbox/requests", params={"since": 0})
        reply.raise_for_status()
        return list(reply.json()["requests"])

    def clear(self) -> None:
        """Forget the request log: indexes restart at 0."""
        self._control.delete("/_sandbox/requests").raise_for_status()

    def wait_first_request(self, timeout: float) -> float:
        """Unix time at which the first request arrived (the sandbox's own stamp)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = self.requests()
            if seen:
                return float(seen[0]["t"])
            time.sleep(0.005)
        raise RuntimeError("no request reached the sandbox")

    def close(self) -> None:
        self._control.close()
        self.proc.stop()


@dataclass
class Bench:
    quick: bool
    redis_base: str = "redis://127.0.0.1:6379"
    run_id: str = field(default_factory=lambda: secrets.token_hex(3))
    token: str = field(default_factory=lambda: "bench-" + secrets.token_hex(12))
    log_dir: str = field(default_factory=lambda: scratch_dir("fashionai-bench-"))
    procs: list[Proc] = field(default_factory=list)
    log_errors: list[dict[str, Any]] = field(default_factory=list)
    # With an AMQP URL, delivery and publish run on RabbitMQ; the other sections
    # stage their backlogs with Redis list operations and stay on Redis.
    amqp_url: str | None = None
    amqp_queues: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.broker_url = f"{self.redis_base}/0"
        self.cache_url = f"{self.redis_base}/1"
        self.broker = redis.Redis.from_url(self.broker_url)
        self.cache = redis.Redis.from_url(self.cache_url)

    @property
    def delivery_broker_url(self) -> str:
        """The broker of the delivery and publish sections."""
        return self.amqp_url or self.broker_url

    def amqp_queue(self, name: str) -> str:
        """A queue name on RabbitMQ that close() deletes."""
        self.amqp_queues.append(name)
        return name

    @property
    def prefix(self) -> str:
        return f"bench-{self.run_id}"

    def name(self, what: str) -> str:
        return f"{self.prefix}-{what}"

    def settings(self, sandbox: Sandbox, what: str, **changes: Any) -> Settings:
        values: dict[str, Any] = {"broker_url": self.broker_url, **changes}
        return Settings(
            api_url=sandbox.url,
            app_token=SecretStr(self.token),
            redis_url=self.cache_url,
            # The project's state store (counters, retries, dead letters) beside the
            # peers' counters in the benchmark's cache database: one place to read
            # every contender's progress. A deployment keeps them apart (README).
            state_url=self.cache_url,
            queue=self.name(what),
            tenant=self.name(what),
            log_level="INFO",
            **values,
        )

    def pause(self, proc: Proc) -> None:
        """SIGSTOP a process and its children (a consumer that holds still while a backlog is built)."""
        for pid in descendants(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def resume(self, proc: Proc) -> None:
        for pid in descendants(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    # -- children --------------------------------------------------------------------

    def sandbox(self) -> Sandbox:
        proc = start_sandbox(
            self.token, log_dir=self.log_dir, knobs=["--latency-ms", str(UPSTREAM_LATENCY_MS)]
        )
        self.procs.append(proc)
        return Sandbox(proc)

    def worker(
        self, settings: Settings, node: str, args: Sequence[str] = ("-c", "2"), wait_ready: bool = True
    ) -> Proc:
        """The project's worker: `python -m fashionai_pipeline.worker.cli worker ARGS -n NODE@%h`."""
        proc = start_worker(
            settings, log_dir=self.log_dir, args=[*args, "-n", f"{node}@%h"], wait_ready=False
        )
        self.procs.append(proc)
        if wait_ready:
            wait_for_line(proc, "pump started", count=_processes(args))
        return proc

    def spawn(
        self, name: str, argv: Sequence[str], env: dict[str, str] | None = None, stdin: bool = False
    ) -> Proc:
        log_path = os.path.join(self.log_dir, f"{name}-{time.monotonic_ns()}.log")
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(
                list(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
            )
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def stop(self, *procs: Proc, timeout: float = 20.0) -> None:
        """Stop processes together (TERM all, then wait; KILL what outlives `timeout`).

        Notes any error a worker logged.
        """
        for proc in procs:
            proc.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in procs:
            try:
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                progress(f"{proc.name} ({proc.pid}) ignored SIGTERM for {timeout:.0f}s; killing it")
            _kill_leftovers(proc)
            proc.popen.wait(5)
            if proc in self.procs:
                self.procs.remove(proc)
            bad = [
                line
                for line in proc.output().splitlines()
                if " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback")
            ]
            if bad:
                self.log_errors.append(
                    {"process": proc.name, "log": proc.log_path, "lines": len(bad), "first": bad[0][:300]}
                )
                progress(f"{proc.name}: {len(bad)} error line(s) in {proc.log_path}")

    # -- counters --------------------------------------------------------------------

    def finished(self, tenant: str) -> int:
        """Events of `tenant` whose outcome is recorded: cached, stale, dead (invalid ones included)."""
        values = self.cache.hmget(keys.stats(tenant), "cached", "stale", "dead", "duplicate")
        return sum(int(v) for v in values if v is not None)

    def stats(self, tenant: str) -> dict[str, int]:
        raw: dict[bytes, bytes] = self.cache.hgetall(keys.stats(tenant))  # type: ignore[assignment]
        return {k.decode(): int(v) for k, v in raw.items()}

    # -- clean-up --------------------------------------------------------------------

    def close(self) -> None:
        try:
            self.stop(*[proc for proc in self.procs if proc.alive()])
        except Exception as exc:  # keep going: the clean-up below must run
            progress(f"could not stop every child: {exc!r}")
            for proc in self.procs:
                _kill_leftovers(proc)
        self.procs.clear()
        self.clean()
        self._delete_amqp_queues()

    def _delete_amqp_queues(self) -> None:
        if not self.amqp_url or not self.amqp_queues:
            return
        from kombu import Connection

        try:
            with Connection(self.amqp_url, connect_timeout=5) as conn:
                channel = conn.channel()
                for queue in self.amqp_queues:
                    for name in (queue, f"{queue}.control"):
                        with contextlib.suppress(Exception):
                            channel.queue_delete(name)
        except Exception as exc:
            progress(f"could not delete the run's RabbitMQ queues: {exc!r}")
        self.amqp_queues.clear()

    def clean(self) -> None:
        """Delete every key, binding and unacked entry this run created."""
        mark = self.prefix.encode()
        for client in (self.broker, self.cache):
            doomed = list(client.scan_iter(match=f"*{self.prefix}*", count=1000))
            for i in range(0, len(doomed), 500):
                client.delete(*doomed[i : i + 500])
        for key in self.broker.scan_iter(match="_kombu.binding*", count=1000):
            if self.broker.type(key) == b"set":
                members = [m for m in self.broker.smembers(key) if mark in m]
                if members:
                    self.broker.srem(key, *members)
            elif self.broker.type(key) == b"zset":
                ranked: list[bytes] = self.broker.zrange(key, 0, -1)  # type: ignore[assignment]
                members = [m for m in ranked if mark in m]
                if members:
                    self.broker.zrem(key, *members)
        tags = [tag for tag, raw in self.broker.hscan_iter("unacked", count=1000) if mark in raw]
        if tags:
            self.broker.hdel("unacked", *tags)
            self.broker.zrem("unacked_index", *tags)


def _kill_leftovers(proc: Proc) -> None:
    # Children were started in their own session, so their process group id is
    # the child's pid: whatever is left of it (e.g. pool children of a worker that
    # had to be killed) goes too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def wait_for_line(proc: Proc, text: str, *, count: int = 1, timeout: float = 60.0) -> None:
    """Wait until `text` appears `count` times in the process's output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.output().count(text) >= count:
            return
        if not proc.alive():
            break
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name} did not report {text!r} x{count}:\n{proc.output()[-3000:]}")


def _processes(args: Sequence[str]) -> int:
    """Pumps a worker command line starts: one per prefork child."""
    args = list(args)
    if "--pool" in args and args[args.index("--pool") + 1] in ("solo", "threads"):
        return 1
    for flag in ("-c", "--concurrency"):
        if flag in args:
            return int(args[args.index(flag) + 1])
    return os.cpu_count() or 1
