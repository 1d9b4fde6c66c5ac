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
    superseded = int(_found(r"superseded by a newer ranking \(not written\)\s+(\d+)", out.stdout))
    assert cached + superseded == published > 0
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


# -- no input crashes the producer CLI ------------------------------------------------------

SECRET = "tok-" + "c0ffee15bad5eed0a1b2c3"


def _cli(args: list[str], env: dict[str, str], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FASHIONAI_")}
    return subprocess.run(
        [sys.executable, "-m", "fashionai_pipeline.worker.cli", *args],
        env={**base, **env},
        input=stdin,
        capture_output=True,
        timeout=120,
    )


def _cli_env(**extra: str) -> dict[str, str]:
    from tests.conftest import BROKERS, CACHE_URL

    run = os.urandom(4).hex()
    env = {
        "FASHIONAI_BROKER_URL": BROKERS["redis"],
        "FASHIONAI_REDIS_URL": CACHE_URL,
        "FASHIONAI_QUEUE": f"test.cli.{run}",
        "FASHIONAI_TENANT": f"tcli{run}",
        "FASHIONAI_APP_TOKEN": SECRET,
    }
    env.update(extra)
    return env


def _queued(env: dict[str, str]) -> list[dict[str, object]]:
    import json

    import redis

    from fashionai_pipeline.producers.kombu_redis import message_body
    from fashionai_pipeline.producers.message import decode

    client = redis.Redis.from_url(env["FASHIONAI_BROKER_URL"])
    raw = client.lrange(env["FASHIONAI_QUEUE"], 0, -1)
    client.delete(env["FASHIONAI_QUEUE"])
    return [decode(message_body(json.loads(m))).event.body() for m in reversed(raw)]


def _body(session: str, item: str = "p1", kind: str = "productView") -> bytes:
    return b'{"sessionId":"%s","eventType":"%s","data":{"id":"%s"}}\n' % (
        session.encode(),
        kind.encode(),
        item.encode(),
    )


@pytest.mark.parametrize("source", ["file", "stdin"])
def test_publish_file_gives_every_line_a_verdict_and_publishes_the_valid_ones(tmp_path, source):
    lines = b"".join(
        [
            b"\xef\xbb\xbf" + _body("s1"),  # a BOM at the start
            b"\n",  # blank: skipped, no verdict
            b'{"sessionId":"bad\xff","eventType":"productView","data":{"id":"p"}}\n',  # invalid UTF-8
            b"[" * 10_000 + b"]" * 10_000 + b"\n",  # 10,000 levels of nesting
            _body("s2", ""),  # names the field
            b"{not json\n",
            _body("s3", "", "customShelf"),
        ]
    )
    env = _cli_env()
    if source == "file":
        path = tmp_path / "events.jsonl"
        path.write_bytes(lines)
        done = _cli(["publish", "--file", str(path)], env)
    else:
        done = _cli(["publish", "--file", "-"], env, stdin=lines)
    out = done.stdout.decode() + done.stderr.decode()  # published on stdout, the rest on stderr
    assert done.returncode == 1, out  # some lines were refused
    assert "Traceback" not in out
    verdicts = dict(re.findall(r"^line (\d+): (.*)$", out, re.MULTILINE))
    assert sorted(verdicts, key=int) == ["1", "3", "4", "5", "6", "7"]
    assert verdicts["1"].startswith("published") and verdicts["7"].startswith("published")
    assert verdicts["3"].startswith("refused: not valid UTF-8")
    assert verdicts["4"] == "refused: not valid JSON: nested too deeply"
    assert verdicts["5"].startswith("refused: data.id:")
    assert verdicts["6"].startswith("refused: not valid JSON")
    assert "published 2 event(s), refused 4, not published 0, unknown 0" in done.stdout.decode()
    assert "line 1: published" in done.stdout.decode() and "line 3: refused" in done.stderr.decode()
    assert [b["sessionId"] for b in _queued(env)] == ["s1", "s3"]


def test_publish_file_of_valid_lines_exits_zero():
    env = _cli_env()
    done = _cli(["publish", "--file", "-"], env, stdin=_body("a") + _body("b"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert [b["sessionId"] for b in _queued(env)] == ["a", "b"]


def test_publish_with_drop_reports_drops_as_drops_not_as_published():
    env = _cli_env(FASHIONAI_BROKER_URL="redis://127.0.0.1:1/0", FASHIONAI_ON_BROKER_DOWN="drop")
    done = _cli(["publish", "--file", "-"], env, stdin=_body("a") + b"oops\n")
    err = done.stderr.decode()
    assert done.returncode == 1
    assert re.search(r"^line 1: not published: dropped", err, re.MULTILINE), err
    assert "published 0 event(s), refused 1, not published 1, unknown 0" in done.stdout.decode()
    one = _cli(["publish", "--event-type", "productView", "--id", "p", "--session", "s"], env)
    assert one.returncode == 1 and b"not published: dropped" in one.stderr


@pytest.mark.parametrize("bad_id", ["not-an-id", "1-2-3", "'; DROP", ""])
def test_dlq_show_of_a_malformed_id_is_a_clear_usage_error(bad_id):
    done = _cli(["dlq", "show", bad_id], _cli_env())
    assert done.returncode == 2
    assert b"is not a dead-letter id" in done.stderr and b"Traceback" not in done.stderr


def test_dlq_list_since_garbage_is_a_usage_error():
    done = _cli(["dlq", "list", "--since", "last tuesday"], _cli_env())
    assert done.returncode == 2 and b"--since" in done.stderr and b"Traceback" not in done.stderr


def test_an_unreachable_redis_is_one_line_not_a_traceback():
    dead = "redis://:hunter2hunter2@127.0.0.1:1/0"
    env = _cli_env(FASHIONAI_REDIS_URL=dead, FASHIONAI_STATE_URL=dead)  # dlq and stats read the state store
    for args in (["stats"], ["dlq", "list"], ["dlq", "show", "1-0"]):
        done = _cli(args, env)
        err = done.stderr.decode()
        assert done.returncode == 1, err
        assert "Traceback" not in err and "error: redis redis://:***@127.0.0.1:1/0" in err
        assert "hunter2" not in err
    done = _cli(["rankings", "get", "--event-type", "productView", "--id", "p", "--session", "s"], env)
    assert done.returncode == 1 and b"ranking cache unavailable" in done.stderr


@pytest.mark.parametrize(
    "tenants",
    [
        f'{{"shop-a": "{SECRET}"}}',  # a token where a tenant's settings belong
        f'{{"shop-a": {{"app_token": "{SECRET}", "rate_limit": "fast"}}}}',
        f'{{"shop-a": {{"app_token": "{SECRET}", "rate_limit": ',  # not even JSON
    ],
)
def test_a_tenant_setting_that_fails_validation_never_prints_its_token(tenants):
    for args in (["stats"], ["publish", "--file", "-"], ["worker", "--help"]):
        done = _cli(args, _cli_env(FASHIONAI_TENANTS=tenants), stdin=_body("a"))
        output = (done.stdout + done.stderr).decode()
        assert done.returncode == 2, output
        assert "FASHIONAI_TENANTS" in output and "Traceback" not in output
        assert SECRET not in output and SECRET[:10] not in output and SECRET[-10:] not in output


# -- hostile input, third round: one line naming the option or variable, never a traceback ---

PROBE_TOKEN = "TOKEN_SHOULD_NOT_LEAK_" + "123"


def _clean(done: subprocess.CompletedProcess[bytes], *names: str) -> str:
    """stderr, which must be one line naming `names`, with no traceback and no token."""
    out, err = done.stdout.decode(), done.stderr.decode()
    assert "Traceback" not in out + err and PROBE_TOKEN not in out + err and SECRET not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for name in names:
        assert name in lines[0], err
    return lines[0]


def test_an_unreachable_state_store_is_named_not_the_cache():
    from tests.conftest import CACHE_URL

    dead = "redis://:hunter2hunter2@127.0.0.1:24999/7"
    env = _cli_env(FASHIONAI_APP_TOKEN=PROBE_TOKEN, FASHIONAI_STATE_URL=dead)
    for args in (["stats"], ["dlq", "list"], ["dlq", "show", "1-0"], ["dlq", "purge", "--yes"]):
        done = _cli(args, env)
        line = _clean(done, "FASHIONAI_STATE_URL", "redis://:***@127.0.0.1:24999/7")
        assert done.returncode == 1, line
        assert CACHE_URL not in line and "hunter2" not in line
    # Unset, the state store is the broker's Redis, and the broker's variable is named.
    done = _cli(["stats"], _cli_env(FASHIONAI_BROKER_URL="redis://127.0.0.1:24999/7"))
    assert done.returncode == 1
    assert "FASHIONAI_BROKER_URL" in _clean(done, "redis://127.0.0.1:24999/7")


def test_dlq_list_limit_zero_lists_nothing_and_a_negative_limit_is_refused():
    import json

    import redis

    from fashionai_pipeline.producers import keys

    state = "redis://127.0.0.1:6379/13"
    client = redis.Redis.from_url(state)
    entry = {
        "kind": "rejected",
        "reason": "probe",
        "status": 400,
        "attempts": 1,
        "dead_at": 1.0,
        "event": None,
    }
    entry_id = client.xadd(keys.dead_letters(), {"entry": json.dumps(entry)})
    try:
        env = _cli_env(FASHIONAI_STATE_URL=state)
        none = _cli(["dlq", "list", "--limit", "0"], env)
        assert none.returncode == 0 and none.stdout == b"", none.stdout + none.stderr
        assert b"0 shown" in none.stderr
        one = _cli(["dlq", "list", "--limit", "1"], env)
        assert one.returncode == 0 and len(one.stdout.splitlines()) == 1, one.stdout + one.stderr
        refused = _cli(["dlq", "list", "--limit", "-1"], env)
        assert refused.returncode == 2 and refused.stdout == b""
        _clean(refused, "--limit")
    finally:
        client.xdel(keys.dead_letters(), entry_id)
        client.close()


def test_ctrl_c_during_publish_from_stdin_stops_cleanly_and_says_what_was_published():
    import signal
    import time

    env = _cli_env(FASHIONAI_APP_TOKEN=PROBE_TOKEN)
    base = {k: v for k, v in os.environ.items() if not k.startswith("FASHIONAI_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fashionai_pipeline.worker.cli", "publish", "--file", "-"],
        env={**base, **env, "PYTHONUNBUFFERED": "1"},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(_body("c1"))
    proc.stdin.flush()
    first = proc.stdout.readline()  # published; stdin stays open, as `sleep 10 | ...` keeps it
    assert first.startswith(b"line 1: published"), first
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert b"Traceback" not in err and b"KeyboardInterrupt" not in err
    assert re.search(rb"^interrupted: published 1 event\(s\)", err, re.MULTILINE), err
    assert PROBE_TOKEN.encode() not in out + err
    assert [b["sessionId"] for b in _queued(env)] == ["c1"]


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["worker", "--bogus"], "--bogus"),
        (["worker", "-c", "-1"], "--concurrency"),
        (["worker", "-c", "abc"], "--concurrency"),
        (["worker", "-l", "LOUD"], "--loglevel"),
    ],
)
def test_a_bad_worker_option_is_one_line_and_status_two(args, option):
    done = _cli(args, _cli_env(FASHIONAI_APP_TOKEN=PROBE_TOKEN))
    assert done.returncode == 2, done.stderr
    _clean(done, option)


def test_a_bad_log_level_is_refused_naming_the_variable():
    env = _cli_env(FASHIONAI_APP_TOKEN=PROBE_TOKEN, FASHIONAI_LOG_LEVEL="LOUD")
    for args in (["worker"], ["stats"]):
        done = _cli(args, env)
        assert done.returncode == 2, done.stderr
        _clean(done, "FASHIONAI_LOG_LEVEL")
    # The app module Celery's own command line loads refuses it the same way.
    base = {k: v for k, v in os.environ.items() if not k.startswith("FASHIONAI_")}
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "fashionai_pipeline.worker.main", "worker"],
        env={**base, **env},
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    _clean(done, "FASHIONAI_LOG_LEVEL")


def test_serve_on_port_zero_logs_the_port_it_listens_on():
    import time
    import urllib.request

    env = _cli_env(FASHIONAI_APP_TOKEN=PROBE_TOKEN, FASHIONAI_INGEST_KEYS="probekey_0123456789abcdef")
    base = {k: v for k, v in os.environ.items() if not k.startswith("FASHIONAI_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fashionai_pipeline.worker.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ],
        env={**base, **env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        line = b""
        while b"serving on" not in line and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "serve ended"
        match = re.search(rb"serving on http://127\.0\.0\.1:(\d+)", line)
        assert match is not None, line
        port = int(match.group(1))
        assert port != 0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as answer:
            assert answer.status == 200
    finally:
        proc.terminate()
        proc.communicate(timeout=30)  # closes the pipe
