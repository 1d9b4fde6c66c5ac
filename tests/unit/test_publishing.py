"""The publishers' sans-I/O core and the settings' errors: nothing running, nothing mocked."""

from __future__ import annotations

import logging

import pytest

from fashionai_pipeline.producers import (
    BrokerUnavailable,
    ConfigurationError,
    InvalidEvent,
    PublishUnknown,
    Receipt,
    Settings,
    redact,
)
from fashionai_pipeline.producers.message import check_id, decode, new_id
from fashionai_pipeline.producers.publishing import PublisherCore

TOKEN = "tok-" + "5e4d3c2b1a09f8e7d6c5"


def _core(**overrides: object) -> PublisherCore:
    return PublisherCore(Settings(queue="q", tenant="shop", **overrides))


def test_receipts_are_true_only_when_the_event_is_safe():
    assert Receipt("a" * 32, "published") and Receipt("a" * 32, "spooled")
    assert not Receipt("a" * 32, "dropped") and not Receipt("a" * 32, "unknown")


def test_given_message_ids_become_the_envelopes_ids():
    core = _core()
    ids = [new_id(), new_id()]
    assert core.ids(2, ids) == ids
    bodies = [{"sessionId": "s", "eventType": "customShelf", "data": {"id": ""}}] * 2
    messages = core.envelopes("shop", bodies, ids)
    assert [decode(payload).id for payload, _ in messages] == ids == [msg_id for _, msg_id in messages]


@pytest.mark.parametrize("bad", ["A" * 32, "a" * 31, "g" * 32, 7, None, "a" * 32 + "\n"])
def test_a_malformed_message_id_is_an_invalid_event_naming_it(bad):
    with pytest.raises(InvalidEvent) as info:
        check_id(bad)
    assert info.value.field == "message_id"
    with pytest.raises(InvalidEvent, match=r"message_ids\[1\]"):
        _core().ids(2, [new_id(), bad])
    with pytest.raises(InvalidEvent, match="message_ids: must be a list of 2"):
        _core().ids(2, [new_id()])


def test_an_unknown_tenant_is_an_invalid_event_naming_the_tenant():
    with pytest.raises(InvalidEvent) as info:
        _core().route("other")
    assert info.value.field == "tenant" and "configured: shop" in info.value.rule


def test_raise_mode_raises_each_caller_its_own_error_with_its_ids():
    core = _core()
    ids = [new_id(), new_id()]
    cause = BrokerUnavailable("broker down", ids)
    with pytest.raises(BrokerUnavailable) as info:
        core.failed(cause, ids)
    assert info.value is not cause and info.value.message_ids == tuple(ids)
    assert core.stats.dropped == 0


def test_drop_mode_counts_and_logs_once_per_change_of_state(caplog):
    caplog.set_level(logging.INFO, logger="fashionai.publisher")
    core = _core(on_broker_down="drop")
    a, b, c = new_id(), new_id(), new_id()
    assert core.failed(BrokerUnavailable("refused", [a]), [a]) == [Receipt(a, "dropped")]
    assert core.failed(PublishUnknown("stalled", [b, c]), [b, c]) == [
        Receipt(b, "unknown"),
        Receipt(c, "unknown"),
    ]
    assert (core.stats.dropped, core.stats.unknown) == (1, 2)
    assert caplog.text.count("WARNING") == 1
    core.published([new_id()])
    assert "takes events again" in caplog.text
    core.failed(BrokerUnavailable("refused", [a]), [a])
    assert caplog.text.count("WARNING") == 2


def test_a_part_way_failure_keeps_the_confirmed_ones_published():
    core = _core(on_broker_down="drop")
    ids = [new_id() for _ in range(4)]
    receipts = core.failed(PublishUnknown("no confirm", [ids[1], ids[3]]), ids)  # confirms in any order
    assert [r.outcome for r in receipts] == ["published", "unknown", "published", "unknown"]
    assert [r.id for r in receipts] == ids
    assert (core.stats.published, core.stats.unknown) == (2, 2)
    with pytest.raises(BrokerUnavailable) as info:
        _core().failed(BrokerUnavailable("nack", [ids[2]]), ids)
    assert info.value.message_ids == (ids[2],)


def test_share_tells_each_caller_of_a_group_commit_its_own_fate():
    ids = [new_id() for _ in range(3)]
    exc = PublishUnknown("no confirm", ids[1:])
    assert PublisherCore.share(exc, ids[:1]) is None  # confirmed before the failure
    mine = PublisherCore.share(exc, ids[1:2])
    assert isinstance(mine, PublishUnknown) and mine.message_ids == (ids[1],)
    refused = PublisherCore.share(BrokerUnavailable("down", ids), ids[2:])
    assert isinstance(refused, BrokerUnavailable) and refused.message_ids == (ids[2],)


def test_redact_masks_secrets_and_their_fragments():
    text = f"a {TOKEN} b {TOKEN[:12]}... c {TOKEN[-9:]} d data"
    out = redact(text, [TOKEN, "", "ta"])
    assert TOKEN[:8] not in out and TOKEN[-8:] not in out and "***" in out
    assert out.startswith("a *** b ***")
    assert redact("nothing here", [TOKEN]) == "nothing here"


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("FASHIONAI_TENANTS", f'{{"a": {{"app_token": "{TOKEN}", "rate_limit": "x"}}}}', "a.rate_limit"),
        ("FASHIONAI_TENANTS", f'{{"a": "{TOKEN}"}}', "FASHIONAI_TENANTS: a:"),
        ("FASHIONAI_TENANTS", f'{{"a": {{"app_token": "{TOKEN}", ', "not valid JSON"),
        ("FASHIONAI_TENANTS", f'{{"{TOKEN}!": {{"app_token": "{TOKEN}"}}}}', "must match"),
        ("FASHIONAI_PUBLISH_TIMEOUT", "-1", "greater than 0"),
        ("FASHIONAI_ON_BROKER_DOWN", TOKEN, "'raise' or 'drop'"),
    ],
)
def test_bad_settings_name_the_variable_and_never_echo_a_token(monkeypatch, variable, value, named):
    monkeypatch.setenv("FASHIONAI_APP_TOKEN", TOKEN)
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as info:
        Settings()
    message = str(info.value)
    assert variable in message and named in message
    assert TOKEN not in message and TOKEN[:10] not in message and TOKEN[-10:] not in message
    assert info.value.__cause__ is None and info.value.__context__ is None  # no pydantic error rides along


def test_settings_list_every_token():
    settings = Settings(app_token=TOKEN, tenants={"a": {"app_token": "tok-a"}, "b": {"app_token": TOKEN}})
    assert settings.secrets() == [TOKEN, "tok-a"]


def test_a_broker_or_cache_url_nothing_can_use_is_a_configuration_error():
    from fashionai_pipeline.producers import Publisher, RankingReader

    with pytest.raises(ConfigurationError, match=r"FASHIONAI_BROKER_URL: .*foo://u:\*\*\*@host"):
        Publisher(Settings(broker_url="foo://u:secret-pass@host", on_broker_down="drop")).product_view(
            "s", "p"
        )
    with pytest.raises(ConfigurationError, match="not a Redis URL") as info:
        RankingReader(Settings(redis_url="http://u:secret-pass@cache/0"))
    assert "secret-pass" not in str(info.value)


def test_async_callers_of_an_unusable_broker_each_get_their_own_configuration_error():
    import asyncio

    from fashionai_pipeline.producers import AsyncPublisher

    # Settings() refuses such a URL (tests/unit/test_config_errors.py); model_copy skips that
    # check, to reach the publisher's own boundary behind it.
    unusable = Settings().model_copy(update={"broker_url": "foo://nowhere"})

    async def main() -> list[BaseException | Receipt]:
        pub = AsyncPublisher(unusable)
        try:
            return list(
                await asyncio.gather(*(pub.custom_shelf(f"s{i}") for i in range(3)), return_exceptions=True)
            )
        finally:
            await pub.aclose()

    errors = asyncio.run(main())
    assert all(isinstance(e, ConfigurationError) for e in errors)
    assert len({id(e) for e in errors}) == 3
