"""Fixtures for the sandbox tests: a real server on loopback and an HTTP client."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import httpx
import pytest

from fashionai_pipeline.sandbox import SandboxConfig, SandboxServer
from fashionai_pipeline.sandbox.server import TOKEN_HEADER

# Distinctive so a leak into a response or the request log is easy to grep for.
TOKEN = "tok-Sb7xQ2-do-not-leak"

Post = Callable[..., httpx.Response]


@pytest.fixture
def server() -> Iterator[SandboxServer]:
    """A fresh sandbox per test (port 0), so history and the log start empty."""
    with SandboxServer(SandboxConfig(token=TOKEN, seed=1234)) as running:
        yield running


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as http:
        yield http


@pytest.fixture
def post(server: SandboxServer, client: httpx.Client) -> Post:
    """``post(body, token=TOKEN, content=None, headers=None, timeout=None)``.

    Sends ``body`` as JSON (or ``content`` raw) to the recommendation URL.
    ``token=None`` omits the header.
    """

    def send(
        body: object = None,
        *,
        token: str | None = TOKEN,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        sent = {"Content-Type": "application/json"}
        if token is not None:
            sent[TOKEN_HEADER] = token
        sent.update(headers or {})
        payload = content if content is not None else json.dumps(body).encode()
        return client.post(
            server.url,
            content=payload,
            headers=sent,
            timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
        )

    return send


def event(
    event_type: str, item_id: str, session: str = "sess456", user: str | None = None
) -> dict[str, object]:
    """A contract-valid body; tests reach it through the ``make_event`` fixture."""
    body: dict[str, object] = {
        "sessionId": session,
        "eventType": event_type,
        "data": {"id": item_id},
    }
    if user is not None:
        body["userId"] = user
    return body


@pytest.fixture
def token() -> str:
    """The token the ``server`` fixture accepts."""
    return TOKEN


@pytest.fixture
def make_event() -> Callable[..., dict[str, object]]:
    return event
