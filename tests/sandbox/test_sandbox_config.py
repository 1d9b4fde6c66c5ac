"""SandboxConfig rules, without a server."""

from __future__ import annotations

import pytest

from fashionai_pipeline.sandbox import SandboxConfig
from fashionai_pipeline.sandbox.config import KNOBS, ConfigError


def test_defaults_match_the_documented_ones() -> None:
    config = SandboxConfig()
    assert (config.token, config.latency_ms, config.retry_after, config.timeout_sleep_s) == (
        "sandbox-token",
        0.0,
        1,
        30.0,
    )
    assert (config.rate_429, config.rate_5xx, config.rate_timeout) == (0.0, 0.0, 0.0)
    assert config.log_limit == 1_000_000


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"rate_5xx": 1.5}, "rate_5xx"),
        ({"rate_timeout": -0.1}, "rate_timeout"),
        ({"latency_ms": float("nan")}, "latency_ms"),
        ({"latency_jitter_ms": True}, "latency_jitter_ms"),
        ({"retry_after": 1.5}, "retry_after"),
        ({"retry_after_http_date": 1}, "retry_after_http_date"),
        ({"token": ""}, "token"),
        ({"token": "a\r\nb"}, "token"),
        ({"log_limit": 0}, "log_limit"),
        ({"nope": 1}, "nope"),
    ],
)
def test_update_refuses_bad_values_all_or_nothing(changes: dict[str, object], named: str) -> None:
    config = SandboxConfig()
    with pytest.raises(ConfigError, match=f"^{named}:"):
        config.update({"latency_ms": 5, **changes})
    assert config.latency_ms == 0.0


def test_constructor_validates_too() -> None:
    with pytest.raises(ConfigError, match=r"^rate_429:"):
        SandboxConfig(rate_429=3)


def test_token_is_redacted_everywhere_it_could_show() -> None:
    config = SandboxConfig(token="tok-secret-42")
    assert "tok-secret-42" not in repr(config)
    assert "tok-secret-42" not in str(config.public())
    assert set(config.public()) == set(KNOBS)


def test_a_config_file_is_checked_and_names_itself(tmp_path) -> None:
    from fashionai_pipeline.sandbox.config import load_config_file

    path = tmp_path / "sandbox.json"
    path.write_text('{"tokens": [{"name": "shop-a", "token": "t-a"}], "max_products": 12}')
    knobs = load_config_file(path)
    config = SandboxConfig()
    config.update(knobs)
    assert (config.max_products, [e.name for e in config.tokens]) == (12, ["shop-a"])
    for text, problem in (
        ("{nope", "not valid JSON"),
        ("[1]", "must be a JSON object"),
        ('{"colour": 1}', "colour: unknown knob"),
    ):
        path.write_text(text)
        with pytest.raises(ConfigError, match=problem) as caught:
            load_config_file(path)
        assert str(path) in str(caught.value)
