"""Honest publish outcomes against real, misbehaving brokers (private servers, never the shared ones).

A Redis stopped with SIGSTOP after the publisher connected takes the LPUSH into its socket
buffer and answers nothing: the publish must come back within its bound as "unknown" (and the
event does reach the queue once the server runs again, which is why "failed" would be a lie).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator

import pytest
import redis

from fashionai_pipeline.producers import (
    AsyncPublisher,
    BrokerUnavailable,
    InvalidEvent,
    Publisher,
    PublishUnknown,
    Settings,
)
from fashionai_pipeline.producers.kombu_redis import message_body
from fashionai_pipeline.producers.message import decode, new_id
from fashionai_pipeline.worker.local import Proc, start_redis
from tests.conftest import BROKERS, make_settings

pytestmark = pytest.mark.integration

TIMEOUT = 0.3
BOUND = 2 * TIMEOUT + 0.7  # the documented 2 x publish_timeout, and a generous margin for a busy machine


@pytest.fixture
def private_redis(tmp_path) -> Iterator[tuple[Proc, str]]:
    proc, url = start_redis(log_dir=str(tmp_path))
    try:
        yield proc, url
    finally:
        proc.signal(signal.SIGCONT)
        proc.stop(timeout=10)


def _ids_on_queue(url: str, queue: str) -> list[str]:
    raw = redis.Redis.from_url(url, socket_timeout=5).lrange(queue, 0, -1)
    return [decode(message_body(json.loads(m))).id for m in reversed(raw)]


def _wait_for_queue(url: str, queue: str, count: int) -> list[str]:
    deadline = time.monotonic() + 10
    while len(ids := _ids_on_queue(url, queue)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return ids


@pytest.mark.parametrize("tuning", ["default", "plain"])
def test_a_stalled_redis_gives_unknown_within_the_bound_and_a_retry_keeps_the_id(private_redis, tuning):
    proc, url = private_redis
    plain = {"direct_redis": False, "json_templates": False} if tuning == "plain" else {}
    settings = make_settings(url, "http://127.0.0.1:9/unused", publish_timeout=TIMEOUT, **plain)
    with Publisher(settings) as pub:
        assert pub.product_view("s", "before").outcome == "published"  # connected
        proc.signal(signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(PublishUnknown) as info:
            pub.product_view("s", "stalled")
        assert time.monotonic() - started < BOUND
        (lost,) = info.value.message_ids
        proc.signal(signal.SIGCONT)
        # "Unknown" was honest: the LPUSH sat in the stopped server's socket and ran later.
        assert _wait_for_queue(url, settings.queue, 2)[1] == lost
        retried = pub.product_view("s", "stalled", message_id=lost)  # the same event again
        assert retried.id == lost and retried.outcome == "published"
    assert _ids_on_queue(url, settings.queue)[1:] == [lost, lost]  # the worker drops the copy by id


def test_a_redis_stalled_before_connecting_is_unavailable_within_the_bound(private_redis):
    proc, url = private_redis
    settings = make_settings(url, "http://127.0.0.1:9/unused", publish_timeout=TIMEOUT)
    proc.signal(signal.SIGSTOP)  # the kernel still accepts the TCP connection; nothing answers
    with Publisher(settings) as pub:
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable):
            pub.product_view("s", "p")
        assert time.monotonic() - started < BOUND
    proc.signal(signal.SIGCONT)
    assert _ids_on_queue(url, settings.queue) == []  # "not published" was true


def test_drop_mode_reports_unknown_and_counts_it(private_redis):
    proc, url = private_redis
    settings = make_settings(url, "http://127.0.0.1:9/unused", publish_timeout=TIMEOUT, on_broker_down="drop")
    with Publisher(settings) as pub:
        assert pub.product_view("s", "before")
        proc.signal(signal.SIGSTOP)
        receipt = pub.product_view("s", "stalled")
        assert receipt.outcome == "unknown" and not receipt
        assert (pub.stats.published, pub.stats.unknown, pub.stats.dropped) == (1, 1, 0)
        proc.signal(signal.SIGCONT)


def test_async_publishes_against_a_stalled_redis_each_get_their_answer_within_the_bound(private_redis):
    proc, url = private_redis
    settings = make_settings(url, "http://127.0.0.1:9/unused", publish_timeout=TIMEOUT)

    async def main() -> tuple[list[BaseException], float]:
        pub = AsyncPublisher(settings)
        try:
            assert await pub.product_view("s", "before")
            proc.signal(signal.SIGSTOP)
            started = time.monotonic()
            first = asyncio.ensure_future(pub.product_view("s", "first"))
            await asyncio.sleep(0.05)  # the first LPUSH is in flight; these wait for the next
            rest = [pub.product_view(f"s{i}", "later") for i in range(5)]
            results = await asyncio.gather(first, *rest, return_exceptions=True)
            return [r for r in results if isinstance(r, BaseException)], time.monotonic() - started
        finally:
            proc.signal(signal.SIGCONT)
            await pub.aclose()

    errors, elapsed = asyncio.run(main())
    assert elapsed < BOUND + 0.1
    assert isinstance(errors[0], PublishUnknown)  # sent, unanswered
    assert len(errors) == 6 and all(isinstance(e, BrokerUnavailable | PublishUnknown) for e in errors)


@pytest.mark.parametrize("direct", [True, False])
@pytest.mark.parametrize("templates", [True, False])
def test_every_switch_combination_writes_the_same_envelope(cache, direct, templates):
    settings = make_settings(BROKERS["redis"], "http://127.0.0.1:9/unused")
    switched = settings.model_copy(update={"direct_redis": direct, "json_templates": templates})
    msg_id = new_id()
    with Publisher(switched) as pub:
        assert pub.publish(
            {"userId": "ü", "sessionId": 's"1', "eventType": "shopTheLook", "data": {"id": "p\n1"}},
            message_id=msg_id,
        )
    client = redis.Redis.from_url(settings.broker_url)
    (raw,) = client.lrange(settings.queue, 0, -1)
    client.delete(settings.queue)
    frame = json.loads(raw)
    assert frame["properties"]["delivery_tag"] == msg_id
    env = decode(message_body(frame))
    assert (env.id, env.tenant, env.attempt) == (msg_id, settings.tenant, 0)
    assert env.event.body() == {
        "userId": "ü",
        "sessionId": 's"1',
        "eventType": "shopTheLook",
        "data": {"id": "p\n1"},
    }


def test_a_malformed_message_id_touches_no_broker():
    settings = make_settings("redis://127.0.0.1:1/0", "http://127.0.0.1:9/unused")
    with Publisher(settings) as pub, pytest.raises(InvalidEvent) as info:
        pub.product_view("s", "p", message_id="not-an-id")
    assert info.value.field == "message_id"
    assert isinstance(settings, Settings)


# -- a RabbitMQ memory alarm, on a private node (never the shared one) -------------------------


@pytest.fixture
def private_rabbitmq(tmp_path) -> Iterator[tuple[str, list[str]]]:
    """A private RabbitMQ node on free ports: (its URL, the rabbitmqctl command for it)."""
    import os
    import shutil
    import subprocess

    from fashionai_pipeline.worker.local import free_port

    server = shutil.which("rabbitmq-server", path="/usr/lib/rabbitmq/bin:" + os.environ.get("PATH", ""))
    ctl = shutil.which("rabbitmqctl", path="/usr/lib/rabbitmq/bin:" + os.environ.get("PATH", ""))
    if server is None or ctl is None:
        pytest.skip("no rabbitmq-server here")
    node = f"fashionai-test-{os.getpid()}-{os.urandom(3).hex()}@localhost"
    port, dist = free_port(), free_port()
    (tmp_path / "enabled_plugins").write_text("")
    env = {
        **os.environ,
        "RABBITMQ_NODENAME": node,
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist),
        "RABBITMQ_MNESIA_BASE": str(tmp_path / "mnesia"),
        "RABBITMQ_LOG_BASE": str(tmp_path / "log"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(tmp_path / "enabled_plugins"),
        "RABBITMQ_CONFIG_FILE": str(tmp_path / "none"),
    }
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([server], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    command = [ctl, "-n", node]
    try:
        deadline = time.monotonic() + 90  # a busy machine boots Erlang slowly
        while True:  # await_startup fails at once until the node has registered with epmd
            done = subprocess.run(
                [*command, "await_startup", "--timeout", "10"], env=env, capture_output=True
            )
            if done.returncode == 0:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                tail = (tmp_path / "server.log").read_bytes()[-1500:]
                raise AssertionError(f"private RabbitMQ node did not start: {done.stderr[-500:]!r}\n{tail!r}")
            time.sleep(1)
        yield f"amqp://guest:guest@127.0.0.1:{port}//", command
    finally:
        subprocess.run([*command, "stop"], env=env, capture_output=True, timeout=60)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the group this fixture started, nothing else
            proc.wait(10)
        log.close()


def test_a_rabbitmq_memory_alarm_never_holds_a_publish_past_the_bound(private_rabbitmq):
    import subprocess

    from kombu import Connection

    url, ctl = private_rabbitmq
    settings = make_settings(url, "http://127.0.0.1:9/unused", publish_timeout=TIMEOUT)
    with Publisher(settings) as pub:
        assert pub.product_view("s", "before").outcome == "published"
        subprocess.run([*ctl, "set_vm_memory_high_watermark", "0.00001"], check=True, capture_output=True)
        time.sleep(1.0)  # the alarm is raised
        outcomes: list[str] = []
        for i in range(3):
            started = time.monotonic()
            try:
                outcomes.append(pub.product_view("s", f"during{i}").outcome)
            except (PublishUnknown, BrokerUnavailable) as exc:
                outcomes.append(type(exc).__name__)
            assert time.monotonic() - started < BOUND
        # The first was sent and could not be confirmed; the blocked connection sends no more.
        assert outcomes == ["PublishUnknown", "BrokerUnavailable", "BrokerUnavailable"]
        subprocess.run([*ctl, "set_vm_memory_high_watermark", "0.4"], check=True, capture_output=True)
        deadline = time.monotonic() + 20
        while True:  # the connection is unblocked: publishing works again, on the same publisher
            try:
                assert pub.product_view("s", "after").outcome == "published"
                break
            except BrokerUnavailable:
                assert time.monotonic() < deadline
                time.sleep(0.2)
    with Connection(url) as conn:
        queued = []
        with conn.SimpleQueue(settings.queue) as queue:
            while True:
                try:
                    message = queue.get(timeout=2)
                except queue.Empty:
                    break
                queued.append(decode(message.body).event.data.id)
                message.ack()
    # "Unknown" was honest: the event sent during the alarm was queued once the alarm cleared.
    assert queued == ["before", "during0", "after"]


def test_a_publish_retried_after_unknown_reaches_the_upstream_once(private_redis, sandbox, workers):
    """The whole promise: "unknown", then a retry with the same id, and one upstream call.

    The first copy is delivered and recorded before the retry is published, so the retry is
    dropped by the worker's duplicate-id mark (in the state store, here the broker's Redis), not
    merely coalesced with its twin in one batch.
    """
    proc, url = private_redis
    settings = make_settings(url, sandbox.url, publish_timeout=TIMEOUT)
    session = f"once-{new_id()[:8]}"

    def calls() -> int:
        return sum(1 for r in sandbox.requests() if r["body"]["sessionId"] == session)

    with Publisher(settings) as pub:
        assert pub.product_view("connect", "p0001").outcome == "published"
        proc.signal(signal.SIGSTOP)
        with pytest.raises(PublishUnknown) as info:
            pub.product_view(session, "p0002")
        (lost,) = info.value.message_ids
        proc.signal(signal.SIGCONT)
        workers(settings)
        deadline = time.monotonic() + 60
        while calls() < 1:  # the "unknown" publish did reach the queue, and the upstream
            assert time.monotonic() < deadline, "the first copy never reached the upstream"
            time.sleep(0.1)
        time.sleep(1)  # its outcome recorded (the mark written) before the retry arrives
        assert pub.product_view(session, "p0002", message_id=lost).outcome == "published"
        marker = pub.product_view(f"{session}-after", "p0003")  # a later event: the retry is behind us
    deadline = time.monotonic() + 60
    while not any(r["body"]["sessionId"] == f"{session}-after" for r in sandbox.requests()):
        assert time.monotonic() < deadline, f"the later event {marker.id} never reached the upstream"
        time.sleep(0.1)
    assert calls() == 1
