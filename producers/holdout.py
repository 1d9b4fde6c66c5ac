"""The holdout: a stable share of sessions always served the native ordering, to measure the lift.

`FASHIONAI_HOLDOUT` (a fraction, 0 to 1; 0 by default: off) of sessions get the page's own
order, labelled `source="holdout"`, whatever is cached for them; the rest are served as
usual. A session's group is a pure function of its id and `FASHIONAI_HOLDOUT_SALT`: the
first 8 bytes of SHA-256(salt + ":" + session id), big-endian, as a number below 2^64, in the holdout when it
is below `fraction * 2^64`. So a session stays in its group on every page, in every
process and language that computes the same hash (docs/ARCHITECTURE.md gives the recipe),
and a new salt draws new groups (a new experiment). Keyed by the session, not the user: it
is the session that a shop's analytics sees convert. Their events are still published:
Fashion.AI keeps learning, only the page does not use what it says.
"""

from __future__ import annotations

import hashlib
from typing import Final

_SPAN: Final = 1 << 64


def holdout_point(session_id: str, salt: str) -> int:
    """The session's point in [0, 2^64): SHA-256 of `salt:session_id` (UTF-8), first 8 bytes."""
    digest = hashlib.sha256(f"{salt}:{session_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


class Holdout:
    """Which sessions are held out. Pure; built once per reader from the settings."""

    def __init__(self, fraction: float, salt: str = "") -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError("fraction: must be from 0 to 1")
        self.fraction = fraction
        self.salt = salt
        self._below = int(fraction * _SPAN)

    def __contains__(self, session_id: object) -> bool:
        """`session_id in holdout`: True when that session is served the native ordering."""
        if not self._below or not isinstance(session_id, str):
            return False
        return holdout_point(session_id, self.salt) < self._below
