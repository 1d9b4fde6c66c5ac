"""Batch consumption of kombu's Redis transport format.

One script call pops up to N messages and registers each under kombu's unacked
structures (`unacked` hash, `unacked_index` zset, score = Redis time) in the
same atomic step, so there is no moment at which a crash loses a popped
message. One pipeline acks a whole batch. A sweep script returns messages whose
consumer died (unacked for longer than the visibility timeout) to their queue;
it only touches this pump's queues, and kombu's own sweep (run by Celery on the
same database) stays compatible because the entries have kombu's shape.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import redis

from fashionai_pipeline.producers.kombu_redis import UNACKED, UNACKED_INDEX, message_body
from fashionai_pipeline.producers.settings import Settings
from fashionai_pipeline.worker.brokers import OnMessage

# KEYS[1]: queue, KEYS[2]: unacked hash, KEYS[3]: unacked index. ARGV[1]: max count.
# Returns a flat list: tag, message, tag, message, ...
POP_BATCH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local out = {}
for i = 1, tonumber(ARGV[1]) do
  local m = redis.call('RPOP', KEYS[1])
  if not m then break end
  -- A pattern, not cjson.decode: decoding every message in Lua blocked Redis for
  -- 10-15 ms per 200 messages (slowlog). kombu writes the tag as a plain string.
  local tag = string.match(m, '"delivery_tag":%s*"([^"\\]+)"')
  local entry
  if tag and string.sub(m, 1, 1) == '{' then
    entry = '[' .. m .. ',"",' .. cjson.encode(KEYS[1]) .. ']'
  else
    -- Not kombu's format at all: keep it restorable as a message whose body is
    -- the raw text; the worker dead-letters it as undecodable.
    tag = 'fashionai-raw-' .. redis.sha1hex(m) .. '-' .. t[1] .. t[2] .. '-' .. i
    entry = cjson.encode({{body = m, headers = {}, properties = {delivery_tag = tag,
      delivery_info = {exchange = '', routing_key = KEYS[1]}}}, '', KEYS[1]})
  end
  redis.call('HSET', KEYS[2], tag, entry)
  redis.call('ZADD', KEYS[3], now, tag)
  out[#out + 1] = tag
  out[#out + 1] = m
end
return out
"""

# KEYS[1]: unacked hash, KEYS[2]: unacked index. ARGV[1]: visibility timeout (s),
# ARGV[2]: max count, ARGV[3..]: the queues this sweep may restore into.
RESTORE_EXPIRED = """
local t = redis.call('TIME')
local ceil = tonumber(t[1]) + tonumber(t[2]) / 1000000 - tonumber(ARGV[1])
local ours = {}
for i = 3, #ARGV do ours[ARGV[i]] = true end
local restored = 0
local tags = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ceil, 'LIMIT', 0, tonumber(ARGV[2]))
for _, tag in ipairs(tags) do
  local v = redis.call('HGET', KEYS[1], tag)
  local ok, d = false, nil
  if v then ok, d = pcall(cjson.decode, v) end
  if not v then
    redis.call('ZREM', KEYS[2], tag)
  elseif ok and type(d) == 'table' and d[2] == '' and ours[d[3]] then
    redis.call('RPUSH', d[3], cjson.encode(d[1]))
    redis.call('ZREM', KEYS[2], tag)
    redis.call('HDEL', KEYS[1], tag)
    restored = restored + 1
  end
end
return restored
"""


# KEYS[1]: unacked index. ARGV: delivery tags. Re-stamps (XX: only entries still
# unacked) with the Redis clock, so the visibility-timeout sweep, this one's or
# kombu's, leaves the messages of a batch this live pump still holds alone.
KEEP_ALIVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local n = 0
for i = 1, #ARGV do
  n = n + redis.call('ZADD', KEYS[1], 'XX', 'CH', now, ARGV[i])
end
return n
"""

_MIN_IDLE_SLEEP = 0.002


@dataclass(slots=True)
class RedisDelivery:
    lane: int
    tag: str
    raw: bytes
    body: bytes


class RedisSource:
    def __init__(
        self, settings: Settings, queues: list[str], on_message: OnMessage, *, prefetch: int
    ) -> None:
        self._redis = redis.Redis.from_url(
            settings.broker_url, socket_timeout=max(settings.connect_timeout, 5.0), socket_connect_timeout=5.0
        )
        self._redis.ping()
        self._queues = queues
        self._on_message = on_message
        self._prefetch = prefetch
        self._held = [0] * len(queues)
        self._batch = settings.batch_size
        self._visibility = settings.visibility_timeout
        self._pop = self._redis.register_script(POP_BATCH)
        self._idle_sleep = _MIN_IDLE_SLEEP
        self._restore = self._redis.register_script(RESTORE_EXPIRED)
        self._keep_alive = self._redis.register_script(KEEP_ALIVE)

    def poll(self, timeout: float) -> None:
        got = 0
        for lane, queue in enumerate(self._queues):
            room = min(self._prefetch - self._held[lane], self._batch)
            if room <= 0:
                continue
            flat = self._pop(keys=[queue, UNACKED, UNACKED_INDEX], args=[room])
            self._held[lane] += len(flat) // 2
            got += len(flat) // 2
            for i in range(0, len(flat), 2):
                tag, raw = flat[i].decode(), flat[i + 1]
                self._on_message(lane, RedisDelivery(lane, tag, raw, _body(raw)))
        if got:
            self._idle_sleep = _MIN_IDLE_SLEEP
        else:
            # Back off from 2 ms to `timeout` while the queues stay empty: a quiet
            # queue costs little, a fresh event waits at most a few ms.
            time.sleep(min(self._idle_sleep, timeout))
            self._idle_sleep = min(self._idle_sleep * 2, timeout)

    def ack(self, deliveries: list[RedisDelivery]) -> None:
        if not deliveries:
            return
        tags = [d.tag for d in deliveries]
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.zrem(UNACKED_INDEX, *tags)
            pipe.hdel(UNACKED, *tags)
            pipe.execute()
        self._release(deliveries)

    def requeue(self, deliveries: list[RedisDelivery]) -> None:
        if not deliveries:
            return
        with self._redis.pipeline(transaction=True) as pipe:
            for d in deliveries:
                pipe.rpush(self._queues[d.lane], d.raw)
            tags = [d.tag for d in deliveries]
            pipe.zrem(UNACKED_INDEX, *tags)
            pipe.hdel(UNACKED, *tags)
            pipe.execute()
        self._release(deliveries)

    def maintain(self) -> None:
        self._restore(keys=[UNACKED, UNACKED_INDEX], args=[self._visibility, 1000, *self._queues])

    def keep_alive(self, deliveries: list[RedisDelivery]) -> None:
        for i in range(0, len(deliveries), 1000):
            self._keep_alive(keys=[UNACKED_INDEX], args=[d.tag for d in deliveries[i : i + 1000]])

    def stop_consuming(self) -> None:
        """Nothing to cancel: polling simply stops."""

    def close(self) -> None:
        self._redis.close()

    def _release(self, deliveries: list[RedisDelivery]) -> None:
        for d in deliveries:
            self._held[d.lane] -= 1


def _body(raw: bytes) -> bytes:
    try:
        message = json.loads(raw)
        return message_body(message)
    except (ValueError, TypeError, AttributeError):
        return raw
