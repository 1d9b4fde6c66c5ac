"""``python -m fashionai_pipeline.sandbox`` as a separate process: the listening line, determinism, flags."""

from __future__ import annotations

import json
import re
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from fashionai_pipeline.sandbox.server import RECOMMENDATION_PATH, TOKEN_HEADER

REPO = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"^sandbox listening on http://127\.0\.0\.1:(\d+)$")


@contextmanager
def sandbox_process(*flags: str, hash_seed: str = "0") -> Iterator[tuple[subprocess.Popen[str], int]]:
    """Start ``python -m fashionai_pipeline.sandbox --port 0 ...`` and yield (process, announced port)."""
    # A minimal environment: PYTHONHASHSEED varies to prove rankings avoid hash().
    with subprocess.Popen(
        [sys.executable, "-m", "fashionai_pipeline.sandbox", "--port", "0", *flags],
        cwd=REPO,
        env={"PYTHONHASHSEED": hash_seed},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], 15)
            assert ready, "sandbox did not announce its port within 15 s"
            line = proc.stdout.readline().rstrip("\n")
            match = LISTENING.match(line)
            assert match, f"unexpected first line: {line!r}"
            yield proc, int(match.group(1))
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(15)


def test_announces_the_real_port_and_stops_cleanly_on_sigterm() -> None:
    with sandbox_process() as (proc, port):
        assert port > 0
        response = httpx.get(f"http://127.0.0.1:{port}/_sandbox/health", timeout=5)
        assert response.json() == {"ok": True}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


def _rankings(port: int, token: str) -> list[list[str]]:
    url = f"http://127.0.0.1:{port}{RECOMMENDATION_PATH}"
    bodies = [
        {"sessionId": "s1", "eventType": "productView", "data": {"id": "p0077"}},
        {"userId": "90", "sessionId": "s1", "eventType": "categoryView", "data": {"id": "dresses"}},
        {"sessionId": "s1", "eventType": "shopTheLook", "data": {"id": "p0078"}},
        {"sessionId": "s1", "eventType": "customShelf", "data": {"id": ""}},
    ]
    with httpx.Client(headers={TOKEN_HEADER: token}, timeout=5) as client:
        answers = [client.post(url, json=body) for body in bodies]
    assert [a.status_code for a in answers] == [200] * len(bodies)
    return [a.json()["products"] for a in answers]


def test_rankings_are_identical_across_processes() -> None:
    with (
        sandbox_process("--token", "t1", hash_seed="1") as (_, port_a),
        sandbox_process("--token", "t2", hash_seed="4242") as (_, port_b),
    ):
        first, second = _rankings(port_a, "t1"), _rankings(port_b, "t2")
    assert first == second
    assert all(first)  # the customShelf follows three earlier views, so it is not empty


def test_flags_reach_the_config() -> None:
    with sandbox_process("--token", "cli-token", "--rate-429", "1", "--retry-after", "9") as (
        _,
        port,
    ):
        config = httpx.get(f"http://127.0.0.1:{port}/_sandbox/config", timeout=5).json()
        answer = httpx.post(
            f"http://127.0.0.1:{port}{RECOMMENDATION_PATH}",
            json={"sessionId": "s", "eventType": "customShelf", "data": {"id": ""}},
            headers={TOKEN_HEADER: "cli-token"},
            timeout=5,
        )
    assert (config["rate_429"], config["retry_after"]) == (1.0, 9)
    assert (answer.status_code, answer.headers["retry-after"]) == (429, "9")


def test_help_lists_every_knob() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fashionai_pipeline.sandbox", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0
    for flag in (
        "--port",
        "--token",
        "--latency-ms",
        "--latency-jitter-ms",
        "--rate-429",
        "--retry-after",
        "--retry-after-http-date",
        "--rate-5xx",
        "--rate-timeout",
        "--timeout-sleep-s",
        "--seed",
        "--log-limit",
        "--authorize-domain",
        "--config",
        "--catalog",
        "--max-products",
        "--min-history-product-view",
        "--min-history-category-view",
        "--min-history-shop-the-look",
        "--min-history-custom-shelf",
        "--rate-limit-rps",
    ):
        assert flag in done.stdout


def test_a_bad_flag_value_exits_2_naming_the_knob() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fashionai_pipeline.sandbox", "--port", "0", "--rate-5xx", "2"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "rate_5xx" in done.stderr


def test_the_sandbox_benchmark_runs_and_reports_every_row() -> None:
    # the figures are the benchmark's business (docs/PERFORMANCE.md); here only that it runs
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.sandbox",
            "--json",
            "--sessions",
            "40",
            "--connections",
            "4",
            "--reps",
            "2",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    rows = {row["name"]: row for row in result["rows"]}
    assert set(rows) == {"sandbox: browsing", "sandbox: browsing + settings", "peer: bare aiohttp"}
    assert all(row["requests"] == 40 * 8 and row["statuses"] == {"200": 40 * 8} for row in rows.values())
    assert rows["sandbox: browsing"]["non_empty_share"] > 0.5
    assert set(result["ratios"]) == {"sandbox: browsing", "sandbox: browsing + settings"}
    assert all(len(row["rounds_req_per_cpu_s"]) == 2 for row in rows.values())
