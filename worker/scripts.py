"""Lua scripts run atomically inside Redis. Time always comes from the Redis
server (`TIME`), so workers on machines with skewed clocks agree."""

from __future__ import annotations

# Newer-wins cache write for a whole batch.
# KEYS: ranking keys. ARGV[1]: ttl ms; then per key: enqueued_at ms, value.
# A value starts with "[<enqueued_at ms>", so the stored timestamp is read back
# without decoding JSON. Returns one flag per key: 1 written, 0 skipped as stale
# (the cached ranking comes from a newer event). An equal timestamp overwrites,
# so writing the same batch twice (a retried recording) writes it again.
WRITE_RANKINGS = """
local ttl = tonumber(ARGV[1])
local out = {}
for i, key in ipairs(KEYS) do
  local ts = tonumber(ARGV[2 * i])
  local cur = redis.call('GET', key)
  local cur_ts = cur and tonumber(string.match(cur, '^%[(%d+)'))
  if cur_ts and cur_ts > ts then
    out[i] = 0
  else
    redis.call('SET', key, ARGV[2 * i + 1], 'PX', ttl)
    out[i] = 1
  end
end
return out
"""

# Schedule retries. KEYS[1]: retry zset. ARGV: pairs (delay seconds, member).
SCHEDULE_RETRIES = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
for i = 1, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[i]), ARGV[i + 1])
end
return #ARGV / 2
"""

# Claim due retries under a lease, after returning expired leases.
# KEYS[1]: retry zset, KEYS[2]: lease zset. ARGV[1]: max count, ARGV[2]: lease s.
CLAIM_RETRIES = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1000)
for _, m in ipairs(expired) do
  redis.call('ZREM', KEYS[2], m)
  redis.call('ZADD', KEYS[1], now, m)
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, m in ipairs(due) do
  redis.call('ZREM', KEYS[1], m)
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), m)
end
return due
"""

# Extend the lease of claimed retries still being worked on (only those still
# leased: XX never re-adds a member whose batch was recorded meanwhile).
# KEYS[1]: lease zset. ARGV[1]: lease s; ARGV[2..]: members.
EXTEND_LEASE = """
local t = redis.call('TIME')
local deadline = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[1])
local n = 0
for i = 2, #ARGV do
  n = n + redis.call('ZADD', KEYS[1], 'XX', 'CH', deadline, ARGV[i])
end
return n
"""

# GCRA (generic cell rate algorithm), one key per limit; a slot is granted only
# when it is due now, never reserved ahead (worker.limiter says why).
# KEYS[1]: theoretical arrival time (us), KEYS[2]: cooldown key.
# ARGV[1]: emission interval T (us) = 1e6 / rate; ARGV[2]: tolerance tau (us).
# Returns {granted, wait_us}: 1 = send now; 0 = not yet, ask again after wait_us;
# -1 = paused by the cooldown for wait_us.
# Exactness: at most tau / T + 1 grants at one instant, then one per T, so a
# half-open window of length W holds at most tau / T + ceil(W / T) grants; for
# W = 1 s that is rate + tau / T (worker.limiter.tolerance_slots chooses tau).
GCRA_ACQUIRE = """
local cd = redis.call('PTTL', KEYS[2])
if cd > 0 then return {-1, cd * 1000} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local T = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local wait = tat - tau - now
if wait > 0 then return {0, math.floor(wait)} end
local new_tat = tat + T
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return {1, 0}
"""

# Lengthen (never shorten) a cooldown. KEYS[1]: cooldown key; ARGV: ms, reason.
PAUSE = """
local cur = redis.call('PTTL', KEYS[1])
local ms = tonumber(ARGV[1])
if cur < ms then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ms)
  return 1
end
return 0
"""
