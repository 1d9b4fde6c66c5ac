"""The crowd ranking: what Fashion.AI ranked for one (event type, id) for many shoppers, lately.

Optional (`FASHIONAI_CROWD`, off by default: the API reference, docs/UPSTREAM.md, advises the
native ordering for a shopper without data). When on, a reader serves it to a shopper who has
no ranking of their own yet (producers.reader, `source="crowd"`), before the native ordering.

How it is built (`CrowdPolicy`, pure, with the time passed in):

- **Position-weighted.** Each delivered ranking adds `1 / log2(position + 2)` to each of its
  products (1 for the first, 0.63 for the second, 0.5 for the fourth...): the DCG discount,
  so agreement at the top counts most.
- **Decaying.** A contribution's weight halves every `crowd_half_life` seconds (1 h). Scores
  are kept in forward-decay form: a contribution at time t adds `w * 2^((t - epoch)/H)`,
  which orders products exactly as the decayed sums would, without touching the other
  scores; when the exponent passes REBASE_AFTER half-lives every score is scaled down and
  the epoch moved to now, so numbers stay finite.
- **Bounded.** At most `crowd_size` products (the lowest scores go) and the
  `crowd_min_shoppers` most recent distinct shoppers, as 64-bit hashes, never their ids.
- **Served only from a crowd.** The readable ranking is written once `crowd_min_shoppers`
  distinct shoppers (3) have contributed: one other shopper's ranking, built from their own
  history, is theirs, not a crowd's.
- **TTL.** Both keys (`keys.crowd`, `keys.crowd_state`) expire `crowd_ttl` seconds (1 day)
  after their last update.

Where it runs: `record(...)` has one call site, `BatchProcessor.process` (worker/batch.py),
right after the batch's rankings are written to the cache (and their notices announced):
it reads the states of the batch's (type, id) pairs in one MGET, recomputes them, and
writes each back with a compare-and-set script, retrying the ones another worker changed
meanwhile (a hot product seen by several workers at once). It never raises and never
fails the batch: a lost contribution costs a crowd one shopper's vote, and no event.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import redis.asyncio as aioredis

from fashionai_pipeline.producers import keys
from fashionai_pipeline.producers.message import Envelope, compact_json
from fashionai_pipeline.producers.settings import Settings
from fashionai_pipeline.worker.delivery import Delivered, Outcome

log = logging.getLogger("fashionai.worker")

REBASE_AFTER: Final = 32.0  # half-lives: forward-decay factors stay below 2^32
CAS_ATTEMPTS: Final = 3

# KEYS: state, crowd; ARGV: expected state ("" for none), new state, new crowd value ("": none
# yet), TTL ms. Writes only if the state is still what the worker read: 1, else 0.
CAS: Final = """
local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[4])
if ARGV[3] ~= '' then redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4]) end
return 1
"""


@dataclass
class CrowdState:
    """One (type, id)'s tally: forward-decayed scores since `epoch`, recent shoppers (hashes)."""

    epoch: float
    scores: dict[str, float] = field(default_factory=dict)
    who: list[str] = field(default_factory=list)

    def encode(self) -> str:
        return compact_json({"v": 1, "epoch": self.epoch, "scores": self.scores, "who": self.who})

    @classmethod
    def decode(cls, raw: bytes | str | None) -> CrowdState | None:
        """The state, or None for none or one that does not decode (started again)."""
        if raw is None:
            return None
        try:
            obj = json.loads(raw)
            if obj.get("v") != 1:
                return None
            scores = {str(k): float(v) for k, v in obj["scores"].items()}
            return cls(float(obj["epoch"]), scores, [str(w) for w in obj["who"]])
        except (ValueError, TypeError, KeyError, AttributeError):
            return None


@dataclass(frozen=True, slots=True)
class CrowdPolicy:
    """The rules of the tally (module doc). Pure: every method takes the time it needs."""

    half_life: float = 3600.0
    size: int = 100
    min_shoppers: int = 3

    @classmethod
    def of(cls, settings: Settings) -> CrowdPolicy:
        return cls(settings.crowd_half_life, settings.crowd_size, settings.crowd_min_shoppers)

    @staticmethod
    def weight(position: int) -> float:
        return 1.0 / math.log2(position + 2)

    def add(self, state: CrowdState | None, products: Sequence[str], shopper: str, now: float) -> CrowdState:
        """`state` with one shopper's ranking added at `now` (a new state; `state` is not changed)."""
        if state is None:
            state = CrowdState(now)
        epoch, scores = state.epoch, dict(state.scores)
        if (now - epoch) / self.half_life > REBASE_AFTER:
            factor = 2.0 ** (-(now - epoch) / self.half_life)
            scores = {pid: s * factor for pid, s in scores.items() if s * factor > 0.0}
            epoch = now
        boost = 2.0 ** ((now - epoch) / self.half_life)
        for position, pid in enumerate(dict.fromkeys(products)):
            scores[pid] = scores.get(pid, 0.0) + self.weight(position) * boost
        if len(scores) > self.size:
            scores = dict(sorted(scores.items(), key=lambda kv: -kv[1])[: self.size])
        who = [shopper, *(w for w in state.who if w != shopper)][: self.min_shoppers]
        return CrowdState(epoch, scores, who)

    def decayed(self, state: CrowdState, now: float) -> dict[str, float]:
        """The scores as decayed sums at `now` (for reading and tests; ordering needs none of it)."""
        factor = 2.0 ** (-(now - state.epoch) / self.half_life)
        return {pid: s * factor for pid, s in state.scores.items()}

    def value(self, state: CrowdState, now: float) -> str | None:
        """The readable ranking `[now_ms, ids best first]`, or None while too few shoppers contributed."""
        if len(state.who) < self.min_shoppers:
            return None
        ranked = sorted(state.scores, key=lambda pid: (-state.scores[pid], pid))
        return compact_json([int(now * 1000), *ranked])


def shopper_digest(tenant: str, env: Envelope) -> str:
    """A shopper's 64-bit hash (user id when logged in, else session id): never the id itself."""
    ev = env.event
    who = f"u:{ev.userId}" if ev.userId is not None else f"s:{ev.sessionId}"
    return hashlib.blake2b(f"{tenant}\x00{who}".encode(), digest_size=8).hexdigest()


Contribution = tuple[str, Sequence[str]]  # (shopper digest, products)


def contributions(
    leaders: Sequence[Envelope], outcomes: Sequence[Outcome]
) -> dict[tuple[str, str, str], list[Contribution]]:
    """The batch's delivered, non-empty rankings by (tenant, event type, id)."""
    out: dict[tuple[str, str, str], list[Contribution]] = {}
    for env, outcome in zip(leaders, outcomes, strict=True):
        if isinstance(outcome, Delivered) and outcome.products:
            ev = env.event
            out.setdefault((env.tenant, ev.eventType, ev.data.id), []).append(
                (shopper_digest(env.tenant, env), outcome.products)
            )
    return out


async def record(
    client: aioredis.Redis,
    settings: Settings,
    leaders: Sequence[Envelope],
    outcomes: Sequence[Outcome],
    *,
    clock: Callable[[], float] = time.time,
) -> None:
    """Add a recorded batch's rankings to their crowds. No-op unless `settings.crowd`. Never raises.

    Call it after the batch's rankings are in the cache (module doc).
    """
    if not settings.crowd:
        return
    pending = contributions(leaders, outcomes)
    if not pending:
        return
    policy = CrowdPolicy.of(settings)
    ttl_ms = settings.crowd_ttl * 1000
    try:
        cas = client.register_script(CAS)
        for _ in range(CAS_ATTEMPTS):
            names = list(pending)
            state_keys = [keys.crowd_state(*name) for name in names]
            raws = await client.mget(state_keys)
            now = clock()
            async with client.pipeline(transaction=False) as pipe:
                for name, state_key, raw in zip(names, state_keys, raws, strict=True):
                    state = CrowdState.decode(raw)
                    for shopper, products in pending[name]:
                        state = policy.add(state, products, shopper, now)
                    assert state is not None
                    value = policy.value(state, now) or ""
                    expected = "" if raw is None else raw.decode() if isinstance(raw, bytes) else str(raw)
                    args: list[Any] = [expected, state.encode(), value, ttl_ms]
                    await cas(keys=[state_key, keys.crowd(*name)], args=args, client=pipe)
                written = await pipe.execute()
            pending = {name: pending[name] for name, ok in zip(names, written, strict=True) if not ok}
            if not pending:
                return
        log.info("crowd: %d (type, id) pair(s) kept changing under other workers; skipped", len(pending))
    except Exception as exc:  # any Redis failure: the rankings are cached; a crowd misses some votes
        log.warning("crowd: could not update %d crowd ranking(s) (%s)", len(pending), type(exc).__name__)
