"""Where the worker's durable state lives, and the error when nobody said."""

from __future__ import annotations

import pytest

from fashionai_pipeline.producers.errors import ConfigurationError
from fashionai_pipeline.producers.settings import Settings


def test_the_state_store_defaults_to_the_redis_broker():
    settings = Settings(broker_url="redis://broker:6379/0", redis_url="redis://cache:6379/0")
    assert settings.state_store_url() == "redis://broker:6379/0"


def test_an_explicit_state_store_wins():
    settings = Settings(broker_url="redis://broker:6379/0", state_url="redis://state:6379/3")
    assert settings.state_store_url() == "redis://state:6379/3"


def test_with_rabbitmq_a_missing_state_store_is_a_configuration_error_when_asked_not_when_built():
    settings = Settings(broker_url="amqp://guest:guest@rabbit:5672//")  # a web app that only publishes
    with pytest.raises(ConfigurationError, match="FASHIONAI_STATE_URL: required"):
        settings.state_store_url()


def test_the_worker_refuses_to_start_without_a_state_store():
    from fashionai_pipeline.worker.app import create_app

    with pytest.raises(ConfigurationError, match="FASHIONAI_STATE_URL"):
        create_app(Settings(broker_url="amqp://guest:guest@rabbit:5672//"))
