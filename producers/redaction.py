"""Keep secrets out of text that leaves the process: error messages, logs, dead letters.

    redact("upstream said: bad token tok-9f8e7d6c5b4a", ["tok-9f8e7d6c5b4a39281706"])
    -> "upstream said: bad token ***"

`redact(text, secrets)` replaces every occurrence of each secret (as it is, and as it is
written inside a JSON string) with `***`, and also every
run of `FRAGMENT` or more characters copied from a secret of at least that length, so a
token cut short (a validation error that truncates its input, an upstream body that echoes
part of a header) is hidden too. Pure and idempotent; `Settings.secrets()` lists the
secrets of a deployment (the app token and every tenant's).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

MASK = "***"
FRAGMENT = 8  # characters; shorter runs of a token are too common to mask without mangling text


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with each secret, and each run of FRAGMENT+ characters of one, replaced by MASK."""
    marked = [False] * len(text)
    hit = False
    for secret in _forms(secrets):
        hit |= _mark_exact(text, secret, marked)
        if len(secret) >= FRAGMENT:
            hit |= _mark_fragments(text, secret, marked)
    if not hit:
        return text
    out: list[str] = []
    in_mask = False
    for char, masked in zip(text, marked, strict=True):
        if masked:
            if not in_mask:
                out.append(MASK)
            in_mask = True
        else:
            out.append(char)
            in_mask = False
    return "".join(out)


def _forms(secrets: Iterable[str]) -> list[str]:
    """Each secret as it is and as it appears inside a JSON string (a stored answer may quote it)."""
    forms: dict[str, None] = {}
    for secret in secrets:
        if secret:
            forms[secret] = None
            forms[json.dumps(secret)[1:-1]] = None
    return list(forms)


def _mark_exact(text: str, secret: str, marked: list[bool]) -> bool:
    hit = False
    start = text.find(secret)
    while start != -1:
        marked[start : start + len(secret)] = [True] * len(secret)
        hit = True
        start = text.find(secret, start + 1)
    return hit


def _mark_fragments(text: str, secret: str, marked: list[bool]) -> bool:
    grams = {secret[i : i + FRAGMENT] for i in range(len(secret) - FRAGMENT + 1)}
    hit = False
    for i in range(len(text) - FRAGMENT + 1):
        if text[i : i + FRAGMENT] in grams:
            marked[i : i + FRAGMENT] = [True] * FRAGMENT
            hit = True
    return hit
