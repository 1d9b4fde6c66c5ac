"""Tell waiting page renderers that a ranking landed (producers.serving, producers.waiters).

The one worker-side piece of publish-and-wait. `notices` picks, from one
delivered group of identical events, the envelopes that asked to be told
(the optional envelope field `notify`, producers.message); `announce` PUBLISHes
them in one pipelined round trip on the cache Redis, where the waiters listen.

Contract: `announce` runs after the batch's rankings are written to the cache,
never before (a waiter woken early would read the older ranking), and never
fails the batch: a lost notice costs its waiter the rest of its bound, after
which it reads the cache anyway. A batch with no waiting envelope costs nothing:
no Redis command, one attribute test per delivered envelope.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import redis.asyncio as aioredis

from fashionai_pipeline.producers import keys
from fashionai_pipeline.producers.message import NOTIFY_KEY, Envelope

log = logging.getLogger("fashionai.worker")

Notice = tuple[str, str]  # (channel, payload)

# The envelope's optional field as producers.message writes it: last, unescaped quotes.
# Inside an event's values a quote is always escaped (\"), so this cannot match there.
_WAITED = b',"notify":"'
_KEYED = b',"notify":"key"}'


def cuts_batch(raw: bytes | str) -> bool:
    """True for a message a page is waiting for (publish-and-wait): send it alone, now.

    The pump's second hook. A waited event would otherwise sit out the batch
    window (`batch_interval_ms`) before its upstream call, and then wait for
    the slowest call of its batch before the batch is recorded and it is
    notified: time its page is waiting. So the pump dispatches what is pending
    without it, then the waited message as a batch of its own. Events
    announced on their key only (`notify="key"`, the HTTP ingest) keep the
    window: nobody is known to wait for them. One substring test per message;
    no decoding.
    """
    body = raw if isinstance(raw, bytes) else raw.encode()
    return _WAITED in body and not body.endswith(_KEYED)


def notices(group: Iterable[Envelope], ranking_key: str, value: str) -> list[Notice]:
    """The notices owed for one delivered group; `value` is the ranking as cached.

    A waiter's reply channel gets `"<message id> <value>"` (it matches by id);
    the key's channel gets `value` once per group.
    """
    out: list[Notice] = []
    keyed = False
    for env in group:
        if env.notify is None:
            continue
        if env.notify == NOTIFY_KEY:
            if not keyed:
                out.append((keys.landed_channel(ranking_key), value))
                keyed = True
        else:
            out.append((keys.reply_channel(env.notify), f"{env.id} {value}"))
    return out


async def announce(client: aioredis.Redis, pending: list[Notice]) -> None:
    """PUBLISH every notice in one round trip. Never raises (see the module docstring)."""
    if not pending:
        return
    try:
        async with client.pipeline(transaction=False) as pipe:
            for channel, payload in pending:
                pipe.publish(channel, payload)
            await pipe.execute()
    except Exception as exc:  # any Redis failure: the rankings are cached; waiters read them
        log.warning(
            "could not notify %d waiter(s) (%s); they read the cache", len(pending), type(exc).__name__
        )
