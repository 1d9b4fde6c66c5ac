"""Binding a browser read to its shopper: an HMAC the storefront's backend signs per page.

A publishable read key sits in the page, so anyone can copy it; what it may
read is limited to the shopper the storefront's backend signed for. The
backend computes, for the page it renders::

    message = "fashionai-shopper:v1" LF tenant LF sessionId LF (userId or "") LF expires
    token   = expires "." hex(HMAC-SHA256(FASHIONAI_SHOPPER_SIGNING_KEY, message))

(LF: one newline character; strings as UTF-8; hex in lowercase)

with `expires` in unix seconds (an integer), and the browser sends `token` as
`shopper` beside sessionId/userId. Any language with HMAC-SHA256 can sign
(docs/SERVICE.md has the recipe); `sign_shopper` does it in Python and needs
nothing but the standard library.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Final, Literal

MAX_LIFETIME: Final = 7 * 24 * 3600  # seconds: a token valid longer than this is refused
Verdict = Literal["ok", "missing", "malformed", "expired", "invalid"]


def _message(tenant: str, session_id: str, user_id: str | None, expires: int) -> bytes:
    return f"fashionai-shopper:v1\n{tenant}\n{session_id}\n{user_id or ''}\n{expires}".encode()


def sign_shopper(
    secret: str | bytes,
    tenant: str,
    session_id: str,
    user_id: str | None = None,
    *,
    ttl: int = 3600,
    now: float | None = None,
) -> str:
    """The `shopper` token for one shopper, valid for `ttl` seconds. Pure; no I/O."""
    key = secret.encode() if isinstance(secret, str) else secret
    expires = int(time.time() if now is None else now) + ttl
    mac = hmac.new(key, _message(tenant, session_id, user_id, expires), hashlib.sha256).hexdigest()
    return f"{expires}.{mac}"


def verify_shopper(
    secrets: tuple[bytes, ...],
    token: str | None,
    tenant: str,
    session_id: str,
    user_id: str | None,
    *,
    now: float | None = None,
) -> Verdict:
    """Whether `token` was signed, by one of `secrets`, for exactly this shopper and is unexpired.

    Constant-time comparison of the MAC; every secret is tried (rotation).
    """
    if not token:
        return "missing"
    expires_text, dot, mac = token.partition(".")
    if not dot or not expires_text.isdigit() or len(expires_text) > 12 or len(mac) != 64:
        return "malformed"
    expires = int(expires_text)
    current = time.time() if now is None else now
    if expires < current:
        return "expired"
    if expires > current + MAX_LIFETIME:
        return "malformed"
    message = _message(tenant, session_id, user_id, expires)
    good = False
    for secret in secrets:
        expected = hmac.new(secret, message, hashlib.sha256).hexdigest()
        good |= hmac.compare_digest(expected, mac.lower())
    return "ok" if good else "invalid"
