"""Binding a browser read to its shopper: an HMAC the storefront's backend signs per page.

A publishable read key sits in the page, so anyone can copy it; what it may
read is limited to the shopper the storefront's backend signed for. The
backend computes, for the page it renders::

    message = "fashionai-shopper:v1" LF tenant LF sessionId LF (userId or "") LF expires
    token   = expires "." hex(HMAC-SHA256(FASHIONAI_SHOPPER_SIGNING_KEY, message))

(LF: one newline character; strings as UTF-8; hex in lowercase)

with `expires` in unix seconds (an integer, ASCII digits), and the browser sends `token` as
`shopper` beside sessionId/userId. Any language with HMAC-SHA256 can sign
(docs/SERVICE.md has the recipe); `sign_shopper` does it in Python and needs
nothing but the standard library.

The fields are joined by LF, so none may hold a control character (U+0000 to
U+001F, U+007F: LF, CR, NUL, TAB …): otherwise "s1" LF "u1" as the sessionId
and "" as the userId would sign the same message as "s1" and "u1" LF.
`sign_shopper` raises ValueError for such a field, and a read whose tenant,
sessionId or userId holds one is "malformed", whatever its token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from typing import Final, Literal

MAX_LIFETIME: Final = 7 * 24 * 3600  # seconds: a token valid longer than this is refused
Verdict = Literal["ok", "missing", "malformed", "expired", "invalid"]
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TOKEN = re.compile(r"([0-9]{1,12})\.([0-9a-f]{64})")  # ASCII digits, lowercase hex: nothing else


def _signable(tenant: str, session_id: str, user_id: str | None) -> bool:
    """No field holds a control character (the message's separator among them)."""
    return not any(_CONTROL.search(field) for field in (tenant, session_id, user_id or ""))


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
    """The `shopper` token for one shopper, valid for `ttl` seconds. Pure; no I/O.

    Raises ValueError when tenant, session_id or user_id holds a control character.
    """
    if not _signable(tenant, session_id, user_id):
        raise ValueError("tenant, session_id and user_id must not contain control characters")
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

    Constant-time comparison of the MAC; every secret is tried (rotation). "malformed":
    not `expires.mac` in ASCII digits and 64 lowercase hex digits, a lifetime beyond
    MAX_LIFETIME, or a control character in tenant, session_id or user_id.
    """
    if not token:
        return "missing"
    parts = _TOKEN.fullmatch(token)
    if parts is None or not _signable(tenant, session_id, user_id):
        return "malformed"
    expires, mac = int(parts[1]), parts[2]
    current = time.time() if now is None else now
    if expires < current:
        return "expired"
    if expires > current + MAX_LIFETIME:
        return "malformed"
    message = _message(tenant, session_id, user_id, expires)
    good = False
    for secret in secrets:
        expected = hmac.new(secret, message, hashlib.sha256).hexdigest()
        good |= hmac.compare_digest(expected, mac)
    return "ok" if good else "invalid"
