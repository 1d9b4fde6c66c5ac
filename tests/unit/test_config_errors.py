"""Bad configuration is refused where it is made, as ConfigurationError naming the variable
(or, for an object the caller builds, a ValueError naming the argument): never a raw Python
error, never later at first use, never with a password or a token in the message."""

from __future__ import annotations

import os
import stat

import pytest

from fashionai_pipeline.producers import (
    AsyncPublisher,
    BrokerUnavailable,
    ConfigurationError,
    Publisher,
    PublishUnknown,
    Settings,
)
from fashionai_pipeline.producers.publishing import PublisherCore
from fashionai_pipeline.producers.spool import FILE_NAME, Spool
from fashionai_pipeline.producers.stock import RedisFacts, RedisStock

TOKEN = "tok-" + "0a1b2c3d4e5f60718293"
PASSWORD = "secret-pass-" + "4f3e2d1c"
URL_FIELDS = sorted(name for name in Settings.model_fields if name.endswith("_url"))


def _refused(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> str:
    """The message of the ConfigurationError Settings() raises for `variable`=`value`."""
    monkeypatch.setenv("FASHIONAI_APP_TOKEN", TOKEN)
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as info:
        Settings()
    assert info.value.__cause__ is None and info.value.__context__ is None  # no pydantic input
    message = str(info.value)
    assert message.startswith(f"{variable}: "), message
    assert PASSWORD not in message and TOKEN not in message, message
    return message


# -- 1. the spool folder ------------------------------------------------------------------


@pytest.mark.parametrize("publisher", [Publisher, AsyncPublisher])
def test_a_spool_dir_that_is_a_regular_file_is_a_configuration_error(monkeypatch, tmp_path, publisher):
    path = tmp_path / "not-a-folder"
    path.write_text("x")
    monkeypatch.setenv("FASHIONAI_SPOOL_DIR", str(path))
    with pytest.raises(ConfigurationError, match=r"^FASHIONAI_SPOOL_DIR: .*not a directory"):
        publisher(Settings())


def test_a_spool_dir_that_cannot_be_created_is_a_configuration_error(monkeypatch, tmp_path):
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("FASHIONAI_SPOOL_DIR", str(tmp_path / "file" / "spool"))
    with pytest.raises(
        ConfigurationError, match=r"^FASHIONAI_SPOOL_DIR: .*cannot create it: Not a directory"
    ):
        Publisher(Settings())


def test_a_spool_dir_whose_spool_file_cannot_be_written_is_a_configuration_error(tmp_path):
    (tmp_path / FILE_NAME).mkdir()  # the spool's own file name is taken by a folder
    with pytest.raises(ConfigurationError, match=r"^FASHIONAI_SPOOL_DIR: .*cannot write the spool"):
        Spool(str(tmp_path))


def test_a_spool_file_that_is_not_a_spool_is_a_configuration_error(tmp_path):
    (tmp_path / FILE_NAME).write_bytes(b"not sqlite " * 200)
    with pytest.raises(ConfigurationError, match=r"^FASHIONAI_SPOOL_DIR: .*not a database"):
        Spool(str(tmp_path))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through the mode bits")
def test_a_read_only_spool_dir_is_a_configuration_error(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(ConfigurationError, match=r"^FASHIONAI_SPOOL_DIR: .*Permission denied"):
            Spool(str(folder))
    finally:
        folder.chmod(stat.S_IRWXU)


def test_a_usable_spool_dir_is_created_and_opened(tmp_path):
    spool = Spool(str(tmp_path / "a" / "b"))
    assert spool.put("q", [("{}", "m" * 32)], timeout=1) and spool.pending() == 1


# -- 2. every URL setting names its variable, never its password ----------------------------


def test_the_url_settings_are_the_ones_checked_here():
    assert URL_FIELDS == ["api_url", "broker_url", "redis_url", "state_url", "storefront_redis_url"]


def test_a_redis_url_of_another_scheme_names_its_variable(monkeypatch):
    message = _refused(monkeypatch, "FASHIONAI_REDIS_URL", "http://x")
    assert "not a Redis URL" in message and "redis://" in message


@pytest.mark.parametrize("field", URL_FIELDS)
def test_every_url_setting_names_its_variable_and_hides_the_password(monkeypatch, field):
    bad = f"ftp://user:{PASSWORD}@host:21/0" if field == "broker_url" else f"mysql://user:{PASSWORD}@host/0"
    message = _refused(monkeypatch, f"FASHIONAI_{field.upper()}", bad)
    assert "user:***@host" in message  # redacted as redact_url redacts


@pytest.mark.parametrize("field", URL_FIELDS)
@pytest.mark.parametrize(
    "bad",
    [
        f"redis://:{PASSWORD}/x@host/0",  # an unescaped '/' cuts the password into host and path
        f"redis://user:{PASSWORD}#x@host/0",  # and a '#': the rest is a fragment
        "redis://host:notaport/0",
        f"http://[::1:{PASSWORD}@host/",
    ],
)
def test_a_url_that_does_not_parse_names_its_variable_and_shows_nothing_of_a_password(
    monkeypatch, field, bad
):
    if field == "api_url":
        bad = bad.replace("redis://", "http://")
    message = _refused(monkeypatch, f"FASHIONAI_{field.upper()}", bad)
    assert PASSWORD[:8] not in message and "notaport" not in message


@pytest.mark.parametrize("field", [f for f in URL_FIELDS if f != "api_url"])
def test_a_redis_url_redis_py_cannot_read_names_its_variable_and_hides_the_query(monkeypatch, field):
    bad = f"redis://:{PASSWORD}@host/0?socket_timeout=x&password={PASSWORD}"
    message = _refused(monkeypatch, f"FASHIONAI_{field.upper()}", bad)
    assert "redis-py" in message and "socket_timeout" in message and "password=" not in message


def test_a_tenants_api_url_names_the_variable_and_the_tenant(monkeypatch):
    tenants = f'{{"shop-a": {{"app_token": "{TOKEN}", "api_url": "ftp://u:{PASSWORD}@h/"}}}}'
    message = _refused(monkeypatch, "FASHIONAI_TENANTS", tenants)
    assert message.startswith("FASHIONAI_TENANTS: shop-a.api_url: not an HTTP URL")


# -- 3. the broker's URL is checked when the settings are made -------------------------------


@pytest.mark.parametrize("bad", ["notaurl", "foo://nowhere", "memcached://h:11211", "redis:/h", ""])
def test_a_broker_url_nothing_supports_is_refused_by_settings(monkeypatch, bad):
    message = _refused(monkeypatch, "FASHIONAI_BROKER_URL", bad)
    assert "not a broker URL" in message and "amqp://" in message and "redis://" in message


@pytest.mark.parametrize(
    ("field", "good"),
    [
        ("broker_url", "redis://127.0.0.1:6379/0"),
        ("broker_url", "redis://broker:6379/0"),
        ("broker_url", "rediss://:pw@broker:6380/0"),
        ("broker_url", "amqp://guest:guest@rabbit:5672//"),
        ("broker_url", "amqps://u:p@rabbit:5671/vhost"),
        ("broker_url", "pyamqp://guest@rabbit//"),
        ("redis_url", "redis://127.0.0.1:6379/1"),
        ("redis_url", "unix:///run/redis.sock?db=2"),
        ("redis_url", "rediss://cache:6380/0?ssl_cert_reqs=none"),
        ("state_url", "redis://state:6379/3"),
        ("state_url", ""),
        ("storefront_redis_url", ""),
        ("storefront_redis_url", "redis://h/1"),
        ("api_url", "http://127.0.0.1:9/unused"),
        ("api_url", "https://catalog.api.fashionai.dev/api/v1/x?y=a@b"),
    ],
)
def test_every_supported_url_is_accepted_as_it_is(field, good):
    assert getattr(Settings(**{field: good}), field) == good


def test_a_scheme_in_capitals_is_accepted_and_written_in_lowercase():
    settings = Settings(broker_url="REDIS://broker:6379/0", redis_url="Redis://cache/1")
    assert (settings.broker_url, settings.redis_url) == ("redis://broker:6379/0", "redis://cache/1")
    assert settings.state_store_url() == "redis://broker:6379/0"  # seen as the Redis broker it is


# -- 4. a full spool says so ------------------------------------------------------------------


def _full_core(tmp_path, **overrides: object) -> PublisherCore:
    core = PublisherCore(Settings(spool_dir=str(tmp_path), spool_max_bytes=1024, tenant="shop", **overrides))
    assert core.spool is not None and core.spool.put("q", [("x" * 1000, "f" * 32)], timeout=1)
    return core


def _batch(core: PublisherCore):
    return core.prepare(
        None, [{"sessionId": "s", "eventType": "customShelf", "data": {"id": ""}}], None, None
    )


@pytest.mark.parametrize("error", [BrokerUnavailable, PublishUnknown])
def test_a_full_spool_says_it_is_full_and_its_limit_after_the_brokers_reason(tmp_path, error):
    core = _full_core(tmp_path)
    batch = _batch(core)
    reason = "broker redis://u:***@h:6379/0: connection refused"
    accepted = core.put_in_spool(batch.queue, batch.messages, 1.0)
    with pytest.raises(error) as info:
        core.after_spool(error(reason, batch.ids), batch.ids, accepted)
    assert accepted == "full" and info.value.message_ids == tuple(batch.ids)
    assert str(info.value) == (
        f"the disk spool is full (FASHIONAI_SPOOL_MAX_BYTES=1024 bytes) and cannot keep the event; {reason}"
    )


def test_a_full_spool_while_skipping_the_broker_says_it_is_full(tmp_path):
    core = _full_core(tmp_path)
    core.after_spool(BrokerUnavailable("down", ["a" * 32]), ["a" * 32], "stored")  # spooling now
    batch = _batch(core)
    skipped = core.skipped(batch)
    assert skipped is not None  # the broker is not tried: the spool takes the event, or not
    accepted = core.put_in_spool(batch.queue, batch.messages, 1.0)
    with pytest.raises(BrokerUnavailable) as info:
        core.after_spool(skipped, batch.ids, accepted)
    message = str(info.value)
    assert "spool is full (FASHIONAI_SPOOL_MAX_BYTES=1024 bytes)" in message and "(spooling)" not in message
    assert message.endswith("the broker failed moments ago")


def test_a_full_spool_in_drop_mode_counts_the_event_dropped(tmp_path):
    core = _full_core(tmp_path, on_broker_down="drop")
    batch = _batch(core)
    accepted = core.put_in_spool(batch.queue, batch.messages, 1.0)
    [receipt] = core.after_spool(BrokerUnavailable("down", batch.ids), batch.ids, accepted)
    assert receipt.outcome == "dropped" and core.stats.dropped == 1


def test_a_real_publish_to_a_dead_broker_with_a_full_spool_says_the_spool_is_full(tmp_path):
    settings = Settings(
        broker_url=f"redis://:{PASSWORD}@127.0.0.1:1/0",  # nothing listens on port 1
        app_token=TOKEN,
        publish_timeout=0.2,
        spool_dir=str(tmp_path),
        spool_max_bytes=1024,
    )
    Spool(str(tmp_path)).put("q", [("x" * 1000, "f" * 32)], timeout=1)
    with Publisher(settings) as publisher, pytest.raises(BrokerUnavailable) as info:
        publisher.product_view("s1", "p0001")
    message = str(info.value)
    assert message.startswith("the disk spool is full (FASHIONAI_SPOOL_MAX_BYTES=1024 bytes)"), message
    assert PASSWORD not in message and TOKEN not in message and ":***@127.0.0.1:1" in message


# -- 5. RedisStock's kind ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["list", "HASH", "", None, "zset"])
def test_an_unknown_stock_kind_is_refused_naming_the_argument_and_the_accepted_ones(kind):
    with pytest.raises(ValueError, match=r"^kind: must be one of 'set', 'hash', not ") as info:
        RedisStock("stock", kind)
    assert not isinstance(info.value, ConfigurationError)  # an argument of the caller's, not a setting


def test_the_known_stock_kinds_and_redis_facts_still_build():
    assert RedisStock("stock").command(["a"]) == ("SMISMEMBER", "stock", "a")
    assert RedisStock("stock", "hash").command(["a"]) == ("HMGET", "stock", "a")
    assert RedisFacts("facts").command(["a"]) == ("HMGET", "facts", "a")  # a key, no kind to check
