"""Hostile command lines and settings, through `main()`: one line naming the option or the
variable, status 2 for usage and configuration errors (1 for a bind the system refuses),
never a traceback, never the token. Nothing here needs a Redis: every case is refused
before one would be asked."""

from __future__ import annotations

import os
import socket

import pytest

from fashionai_pipeline.producers import ConfigurationError, Settings
from fashionai_pipeline.worker.cli import main

TOKEN = "TOKEN_SHOULD_NOT_LEAK_" + "1a2b3c4d"
# db 13: a database the tests may use (never 0); no command here reaches it.
URL = "redis://127.0.0.1:6379/13"
INGEST = "probekey_0123456789abcdef"


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("FASHIONAI_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("FASHIONAI_APP_TOKEN", TOKEN)
    monkeypatch.setenv("FASHIONAI_BROKER_URL", URL)
    monkeypatch.setenv("FASHIONAI_REDIS_URL", URL)


def _run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str]:
    """main(argv)'s status and its stderr; stdout must stay empty (every error is on stderr)."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = int(exc.code or 0)
    out = capsys.readouterr()
    assert TOKEN not in out.out + out.err
    assert "Traceback" not in out.err
    return code, out.err


def _one_line(err: str, *names: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for name in names:
        assert name in lines[0], err
    return lines[0]


# -- D14: dlq --since ------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["list", "replay"])
@pytest.mark.parametrize(
    "since",
    ["nan", "inf", "--since=-inf", "1e400", "-1", "-99999999999999999", "99999999999999999999", "0001-01-01"],
)
def test_dlq_since_out_of_range_is_refused_naming_since(capsys, command, since):
    argv = [since] if since.startswith("--") else ["--since", since]
    code, err = _run(capsys, ["dlq", command, *argv])
    assert code == 2, err
    assert "out of range" in _one_line(err, "--since")


# -- D15: numeric options --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["dlq", "list", "--limit", "-1"], "--limit"),
        (["dlq", "list", "--limit", "abc"], "--limit"),
        (["demo", "--sessions", "-1"], "--sessions"),
        (["demo", "--sessions", "0"], "--sessions"),
        (["demo", "--sessions", "99999999999999999999"], "--sessions"),
        (["demo", "--timeout", "-1"], "--timeout"),
        (["demo", "--timeout", "0"], "--timeout"),
        (["demo", "--timeout", "nan"], "--timeout"),
        (["demo", "--timeout", "inf"], "--timeout"),
        (["demo", "--timeout", "1e400"], "--timeout"),
        (["serve", "--port", "89536"], "--port"),
        (["serve", "--port", "70000"], "--port"),
        (["serve", "--port", "-1"], "--port"),
        (["serve", "--port", "abc"], "--port"),
    ],
)
def test_a_numeric_option_out_of_range_is_one_line_naming_it(capsys, argv, option):
    code, err = _run(capsys, argv)
    assert code == 2, err
    _one_line(err, option)


def test_a_usage_error_echoing_the_token_redacts_it(capsys):
    code, err = _run(capsys, ["dlq", "list", "--limit", TOKEN])
    assert code == 2 and "--limit" in err


# -- D12: serve binds what it says, and names --host/--port when it cannot --------------------


@pytest.fixture
def _service_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASHIONAI_INGEST_KEYS", INGEST)


@pytest.mark.usefixtures("_service_env")
def test_serve_on_a_port_in_use_names_host_and_port_and_the_reason(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, err = _run(capsys, ["serve", "--host", "127.0.0.1", "--port", str(port)])
    assert code == 1, err
    line = _one_line(err, "--host", f"--port {port}", "in use")
    assert "redis" not in line.lower()


@pytest.mark.usefixtures("_service_env")
@pytest.mark.parametrize("host", ["nonexistent.invalid", "256.1.1.1", "a\x00b", "x" * 300])
def test_serve_on_a_host_that_does_not_resolve_names_host(capsys, host):
    code, err = _run(capsys, ["serve", "--host", host, "--port", "0"])
    assert code == 2, err
    line = _one_line(err, "--host")
    assert "redis" not in line.lower()


def test_serve_function_refuses_a_port_outside_the_tcp_range():
    from fashionai_pipeline.producers.service.run import ListenError, listen

    for port in (-1, 65536, 89536):
        with pytest.raises(ListenError, match="--port") as info:
            listen("127.0.0.1", port)
        assert info.value.status == 2


# -- D17: settings ---------------------------------------------------------------------------


FLOAT_FIELDS = sorted(
    name for name, field in Settings.model_fields.items() if field.annotation in (float, float | None)
)
INT_FIELDS = sorted(name for name, field in Settings.model_fields.items() if field.annotation is int)


@pytest.mark.parametrize("field", FLOAT_FIELDS)
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e400"])
def test_every_float_setting_refuses_non_finite_values(monkeypatch, field, value):
    variable = f"FASHIONAI_{field.upper()}"
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as info:
        Settings()
    assert str(info.value).startswith(f"{variable}: "), info.value


@pytest.mark.parametrize("field", FLOAT_FIELDS + INT_FIELDS)
def test_every_numeric_setting_has_an_upper_bound(monkeypatch, field):
    variable = f"FASHIONAI_{field.upper()}"
    monkeypatch.setenv(variable, "99999999999999999999999")
    with pytest.raises(ConfigurationError) as info:
        Settings()
    assert str(info.value).startswith(f"{variable}: "), info.value


def test_the_numeric_settings_were_found():
    assert {"publish_timeout", "max_age", "rate_limit"} <= set(FLOAT_FIELDS)
    assert {"ranking_ttl", "crowd_ttl", "duplicate_window"} <= set(INT_FIELDS)


@pytest.mark.parametrize("value", ["inf", "nan", "1e400", "99999999999999999999999"])
def test_a_tenant_rate_limit_must_be_finite_and_bounded(monkeypatch, value):
    monkeypatch.setenv("FASHIONAI_TENANTS", f'{{"a": {{"app_token": "{TOKEN}", "rate_limit": "{value}"}}}}')
    with pytest.raises(ConfigurationError, match=r"FASHIONAI_TENANTS: a\.rate_limit") as info:
        Settings()
    assert TOKEN not in str(info.value)


def test_publish_timeout_inf_is_a_configuration_error_on_the_command_line(capsys, monkeypatch):
    monkeypatch.setenv("FASHIONAI_PUBLISH_TIMEOUT", "inf")
    code, err = _run(capsys, ["publish", "--event-type", "productView", "--id", "p", "--session", "s"])
    assert code == 2
    _one_line(err, "FASHIONAI_PUBLISH_TIMEOUT")


URL_VARIABLES = [
    "FASHIONAI_BROKER_URL",
    "FASHIONAI_REDIS_URL",
    "FASHIONAI_STATE_URL",
    "FASHIONAI_STOREFRONT_REDIS_URL",
]


@pytest.mark.parametrize("variable", URL_VARIABLES)
@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/abc",
        "redis://127.0.0.1:6379/-1",
        "redis://127.0.0.1:6379/1x",
        "rediss://127.0.0.1:6380/0/1",
        "redis://127.0.0.1:6379/0?db=-1",
        "redis://127.0.0.1:6379?db=abc",
        "unix:///run/redis.sock?db=-1",
    ],
)
def test_a_redis_url_whose_database_is_not_a_number_is_refused(monkeypatch, variable, url):
    if variable == "FASHIONAI_BROKER_URL" and url.startswith("unix"):
        pytest.skip("a broker URL is not unix://")
    monkeypatch.setenv(variable, url)
    with pytest.raises(ConfigurationError) as info:
        Settings()
    assert str(info.value).startswith(f"{variable}: "), info.value


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "redis://127.0.0.1:6379/15",
        "redis://127.0.0.1:6379",
        "redis://127.0.0.1:6379/",
        "redis://h/1/",
        "redis://:pw@h/0?socket_timeout=1",
        "rediss://cache:6380/0?ssl_cert_reqs=none",
        "redis://127.0.0.1:6379/0?db=3",
        "unix:///run/redis.sock?db=2",
        "unix:///run/redis.sock",
    ],
)
def test_redis_urls_with_a_database_number_or_none_stay_valid(monkeypatch, url):
    monkeypatch.setenv("FASHIONAI_REDIS_URL", url)
    assert Settings().redis_url.startswith(url.split("://")[0])


def test_a_broker_url_with_a_bad_database_is_refused_on_the_command_line(capsys, monkeypatch):
    monkeypatch.setenv("FASHIONAI_BROKER_URL", "redis://127.0.0.1:6379/abc")
    code, err = _run(capsys, ["stats"])
    assert code == 2
    _one_line(err, "FASHIONAI_BROKER_URL", "database number")


@pytest.mark.parametrize("level", ["LOUD", "", "10", "notset", "TOKEN"])
def test_log_level_must_name_a_level(monkeypatch, level):
    monkeypatch.setenv("FASHIONAI_LOG_LEVEL", level)
    with pytest.raises(ConfigurationError, match=r"^FASHIONAI_LOG_LEVEL: ") as info:
        Settings()
    assert level not in str(info.value) or not level


@pytest.mark.parametrize(("level", "read"), [("debug", "DEBUG"), ("Warn", "WARNING"), (" error ", "ERROR")])
def test_log_level_is_case_insensitive(monkeypatch, level, read):
    monkeypatch.setenv("FASHIONAI_LOG_LEVEL", level)
    assert Settings().log_level == read


@pytest.mark.usefixtures("_service_env")
def test_serve_settings_errors_name_the_variable(capsys, monkeypatch):
    monkeypatch.setenv("FASHIONAI_CORS_ORIGINS", f"https://ok.example, {TOKEN}")
    code, err = _run(capsys, ["serve", "--port", "0"])
    assert code == 2
    line = _one_line(err, "FASHIONAI_CORS_ORIGINS")
    assert "service settings" not in line and "cors_origins:" not in line


@pytest.mark.usefixtures("_service_env")
def test_serve_numeric_settings_errors_name_the_variable(capsys, monkeypatch):
    monkeypatch.setenv("FASHIONAI_SERVE_BODY_TIMEOUT", "nan")
    code, err = _run(capsys, ["serve", "--port", "0"])
    assert code == 2
    _one_line(err, "FASHIONAI_SERVE_BODY_TIMEOUT")


# -- D17b: publish --file that cannot be read ------------------------------------------------


@pytest.mark.parametrize("kind", ["missing", "directory", "nul"])
def test_publish_file_that_cannot_be_read_names_file(capsys, tmp_path, kind):
    path = {"missing": str(tmp_path / "nope.jsonl"), "directory": str(tmp_path), "nul": "a\x00b"}[kind]
    code, err = _run(capsys, ["publish", "--file", path])
    assert code == 2, err
    line = _one_line(err, "--file")
    assert "redis" not in line.lower()
