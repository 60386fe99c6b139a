-- Apply a batch of profile deltas of ONE profile atomically, each at most once.
-- KEYS: 1 fields hash, 2 anonymous_ids set, 3 products zset, 4 sessions zset
-- ARGV: 1 seen-key prefix, 2 dedupe TTL seconds, 3 now ms, 4 session gap ms,
--       then 10 values per delta: event_id, event_type, ts_ms, user_id, anonymous_id,
--       category, product_id, cart_change, purchase_micros, engagement
-- Returns the number of deltas applied (duplicates are skipped).
-- Semantics mirror streaming/profiles/reference.py; every change commutes.
local fields, anon, products, sessions = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local seen_prefix, ttl, now, gap = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local applied = 0

local function add_session(t)
  local s, e = t, t
  local candidates = redis.call('ZREVRANGEBYSCORE', sessions, t + gap, '-inf', 'LIMIT', 0, 2)
  for _, member in ipairs(candidates) do
    local sep = string.find(member, ':', 1, true)
    local cs, ce = tonumber(string.sub(member, 1, sep - 1)), tonumber(string.sub(member, sep + 1))
    if t - ce <= gap then
      redis.call('ZREM', sessions, member)
      if cs < s then s = cs end
      if ce > e then e = ce end
    end
  end
  redis.call('ZADD', sessions, s, string.format('%d:%d', s, e))
end

for i = 5, #ARGV, 10 do
  local event_id = ARGV[i]
  if redis.call('SET', seen_prefix .. event_id, '1', 'NX', 'EX', ttl) then
    applied = applied + 1
    local ts = tonumber(ARGV[i + 2])
    redis.call('HINCRBY', fields, 'event_count', 1)
    local first = tonumber(redis.call('HGET', fields, 'first_seen'))
    if not first or ts < first then redis.call('HSET', fields, 'first_seen', ARGV[i + 2]) end
    local last = tonumber(redis.call('HGET', fields, 'last_seen'))
    if not last or ts > last then redis.call('HSET', fields, 'last_seen', ARGV[i + 2]) end
    if ARGV[i + 3] ~= '' then redis.call('HSET', fields, 'user_id', ARGV[i + 3]) end
    if ARGV[i + 4] ~= '' then redis.call('SADD', anon, ARGV[i + 4]) end
    redis.call('HINCRBY', fields, 't:' .. ARGV[i + 1], 1)
    if ARGV[i + 9] ~= '0' then redis.call('HINCRBY', fields, 'engagement', ARGV[i + 9]) end
    if ARGV[i + 5] ~= '' then redis.call('HINCRBY', fields, 'v:' .. ARGV[i + 5], 1) end
    local product = ARGV[i + 6]
    if product ~= '' then
      if ARGV[i + 7] ~= '0' then redis.call('HINCRBY', fields, 'c:' .. product, ARGV[i + 7]) end
      redis.call('ZADD', products, 'GT', ts, product)
      redis.call('ZREMRANGEBYRANK', products, 0, -11)
    end
    if ARGV[i + 8] ~= '0' then redis.call('HINCRBY', fields, 'purchase_micros', ARGV[i + 8]) end
    add_session(ts)
  end
end
if applied > 0 then redis.call('HSET', fields, 'updated_at', now) end
return applied
