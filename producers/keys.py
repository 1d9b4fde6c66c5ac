"""Every Redis key the project uses, with its owner, its TTL and the Redis it lives in.

Two Redis roles (docs/ARCHITECTURE.md, "Two Redis roles"): the *cache*
(FASHIONAI_REDIS_URL) holds rankings only and may evict or restart empty; the
*state store* (FASHIONAI_STATE_URL, default the Redis broker's URL) holds
everything else and must persist and never evict.

Key parts are escaped so that an id containing ':' cannot collide with another
key ('%' -> '%25', ':' -> '%3A'). Everything lives under `fashionai:{tenant}:`.
"""

from __future__ import annotations

PREFIX = "fashionai"


def _esc(part: str) -> str:
    return part.replace("%", "%25").replace(":", "%3A")


def ranking(tenant: str, event_type: str, item_id: str, session_id: str, user_id: str | None) -> str:
    """The cached ranking for one (type, id, shopper).

    Owner: the worker writes it (SET with PX = ranking_ttl, newer-wins script);
    storefront readers GET it. The shopper is the user id when present, else the
    session id, so a logged-in shopper's ranking follows them across sessions.
    Value: JSON array `[enqueued_at_ms, "p1", "p2", ...]` (at most
    max_ranking_items ids); `[ts]` alone means "not enough data yet".
    Lives in: the cache.
    """
    who = f"u:{_esc(user_id)}" if user_id is not None else f"s:{_esc(session_id)}"
    return f"{PREFIX}:{_esc(tenant)}:rank:{event_type}:{_esc(item_id)}:{who}"


def stats(tenant: str) -> str:
    """HASH of counters (delivered, cached, empty, retried, dead, coalesced...).

    Owner: workers HINCRBY it in the transaction that records a batch (so the
    counters agree with the retries and dead letters written beside them); the
    demo, CLI and status pages read it. No TTL: counters since the key was last
    deleted. Lives in: the state store.
    """
    return f"{PREFIX}:{_esc(tenant)}:stats"


def latency(tenant: str) -> str:
    """LIST of recent enqueue->cache latencies in ms (capped at 10,000 by LTRIM).

    Owner: workers LPUSH per batch; the demo reads it for p50/p99. No TTL.
    Lives in: the state store (bounded, so noeviction costs at most ~100 kB per tenant).
    """
    return f"{PREFIX}:{_esc(tenant)}:latency"


def rate_limit(tenant: str) -> str:
    """GCRA theoretical arrival time, us (STRING). Owner: limiter script. TTL: the burst window.

    Lives in: the state store.
    """
    return f"{PREFIX}:{_esc(tenant)}:ratelimit"


def cooldown(tenant: str) -> str:
    """Set by a 429's Retry-After or a 401; every worker waits while it exists.

    Owner: limiter script (only ever lengthened). TTL: the pause itself (PX).
    Value: the reason, e.g. "429" or "401". Lives in: the state store (a cache
    restart must not end a Retry-After pause early).
    """
    return f"{PREFIX}:{_esc(tenant)}:cooldown"


def retry(tenant: str) -> str:
    """ZSET of scheduled retries: member = wire message (JSON), score = due time (s).

    Owner: workers add on a retryable failure and claim when due. No TTL: durable.
    Lives in: the state store.
    """
    return f"{PREFIX}:{_esc(tenant)}:retry"


def retry_lease(tenant: str) -> str:
    """ZSET of claimed retries: member = wire message, score = lease expiry (s).

    A worker that dies holding a lease loses it; any worker moves expired leases
    back into `retry`; a live worker extends the lease of a batch it still works
    on. No TTL. Lives in: the state store.
    """
    return f"{PREFIX}:{_esc(tenant)}:retry:lease"


def seen(tenant: str, digest: str) -> str:
    """Marks an event identity (type, id, session, user) as sent recently.

    Owner: workers SET NX PX coalesce_window_ms; a second identical event inside
    the window is coalesced instead of sent. TTL: the window. Lives in: the state store.
    """
    return f"{PREFIX}:{_esc(tenant)}:seen:{digest}"


def recorded(tenant: str, message_id: str) -> str:
    """Duplicate-id mark: the message `message_id` had its outcome recorded.

    Owner: workers SET it (EX = duplicate_window, default 300 s) in the same
    MULTI/EXEC that records the message's outcome, in the state store; on
    consume, a broker delivery whose id is marked is dropped (acked, counted
    `duplicate`). Retries claimed from the retry set are never checked against
    it. TTL: the window (a producer's publish retry after an "unknown" outcome,
    or a redelivery after a crash between recording and ack, lands well inside it).
    Lives in: the state store.
    """
    return f"{PREFIX}:{_esc(tenant)}:recorded:{_esc(message_id)}"


def crowd(tenant: str, event_type: str, item_id: str) -> str:
    """The crowd ranking of one (type, id): what Fashion.AI ranked for it for other shoppers recently.

    Owner: the worker writes it (worker/crowd.py, only with FASHIONAI_CROWD), in the ranking
    format `[updated_at_ms, "p1", ...]`, once `crowd_min_shoppers` distinct shoppers have
    contributed; readers GET it (with FASHIONAI_CROWD) when a shopper has no ranking of
    their own. TTL: `crowd_ttl` (1 day), renewed by every update.
    """
    return f"{PREFIX}:{_esc(tenant)}:crowd:{event_type}:{_esc(item_id)}"


def crowd_state(tenant: str, event_type: str, item_id: str) -> str:
    """The worker's tally behind `crowd(...)`: decayed scores, the decay epoch, recent shoppers (hashed).

    Owner: workers only (read, recompute, compare-and-set; worker/crowd.py). Value: JSON
    `{"v": 1, "epoch": s, "scores": {pid: score}, "who": [digest, ...]}`, bounded by
    `crowd_size` products and `crowd_min_shoppers` digests. TTL: `crowd_ttl`, renewed by
    every update.
    """
    return f"{PREFIX}:{_esc(tenant)}:crowd:{event_type}:{_esc(item_id)}:state"


def stock(tenant: str) -> str:
    """The storefront's stock: a SET of ids in stock, or a HASH of units per id (producers.stock).

    In the storefront's OWN Redis (`storefront_redis_url`), never the ranking cache.
    Owner: the storefront writes it; readers only read it (SMISMEMBER / HMGET). TTL: none
    (the storefront's data). `FASHIONAI_STOCK_KEY` may name another key instead.
    """
    return f"{PREFIX}:{_esc(tenant)}:stock"


def facts(tenant: str) -> str:
    """The storefront's product facts: a HASH of id -> JSON (price, discounted, stock per size).

    In the storefront's own Redis, like `stock`. Owner: the storefront; readers HMGET.
    TTL: none. `FASHIONAI_FACTS_KEY` may name another key instead.
    """
    return f"{PREFIX}:{_esc(tenant)}:facts"


def dead_letters() -> str:
    """STREAM of dead letters, all tenants (each entry names its tenant).

    Owner: workers XADD; `fashionai-pipeline dlq` reads, replays and purges.
    No TTL: dead letters wait for a person. Each entry is bounded (~5 kB: stored
    texts are cut at 2000 characters). Lives in: the state store.
    """
    return f"{PREFIX}:dlq"


# -- pub/sub channels (not keys: a channel stores nothing, so it has no TTL) -------


def reply_channel(token: str) -> str:
    """The channel of one waiting process: rankings of the events it asked to be told of.

    Owner: the worker PUBLISHes `"<message id> <ranking value>"` on it right after
    the ranking is written to the cache, for each delivered envelope whose
    `notify` field names `token`; the process that chose `token` (a random
    token, new after every fork: producers.waiters) is its only subscriber.
    Not per tenant: one web process may serve several. TTL: none; a message
    published while nobody listens is dropped by Redis, which costs nothing.
    """
    return f"{PREFIX}:reply:{_esc(token)}"


def landed_channel(ranking_key: str) -> str:
    """The channel of one ranking key: "a ranking for this key landed".

    Owner: the worker PUBLISHes the ranking value on it after the cache write,
    for envelopes whose `notify` field is "key" (the HTTP service's ingest);
    readers waiting for a key not cached yet subscribe for the length of their
    wait. A suffix, not a new key part: escaped key parts never contain ':'.
    TTL: none (a channel).
    """
    return f"{ranking_key}:landed"
