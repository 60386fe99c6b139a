-- Apply a batch of profile deltas atomically, each event at most once.
-- KEYS:  the fields-hash key ("<base>:p") of each profile the batch touches; every other key
--        of a profile is "<base>:<suffix>" with the same hash tag, so it lives in the same slot.
--        On a Redis Cluster, where declared keys must share one slot, KEYS is empty and ARGV[8]
--        is a msgpack array of these keys instead: a call carries only profiles of one master
--        and the store prepends "#!lua flags=allow-cross-slot-keys" (streaming/profiles/store.py),
--        so one call may touch several slots of that master; each profile stays in its own slot.
-- ARGV:  1 dedupe TTL seconds, 2 now ms, 3 session gap ms,
--        4 msgpack array of deltas: {key_index, event_id, event_type, ts_ms, user_id,
--          anonymous_id, category, product_id, cart_change, purchase_micros, engagement}
--        5 intent model, msgpack {bias, feature types, weights} (streaming/profiles/intent.py), or 
--        6 msgpack array of key indices to report on (or ''), 7 '1' to report last products
--        8 (cluster only) the keys, see KEYS
-- Returns the number of deltas applied (the rest were duplicates).
-- Semantics are those of streaming/profiles/reference.py; every change commutes.
-- Fields: event_count, first_seen, last_seen, user_id, updated_at, engagement, purchase_micros,
-- t:<type>, v:<category>, c:<product>, and ss/se = the latest session's bounds; earlier
-- sessions are "<start>:<end>" members of the <base>:sessions zset (score = start).
local keys = KEYS
if ARGV[8] then keys = cmsgpack.unpack(ARGV[8]) end
local ttl, now, gap = ARGV[1], ARGV[2], tonumber(ARGV[3])
local deltas = cmsgpack.unpack(ARGV[4])
local model = nil
if ARGV[5] and ARGV[5] ~= '' then model = cmsgpack.unpack(ARGV[5]) end
local applied = 0

local function int(x) return string.format('%d', x) end

-- Intent: the latest session's counts by type ('sq' = "type=n,type=n") scored by the logistic model.
local function parse_counts(text)
  local counts = {}
  if text then for t, n in string.gmatch(text, '([%w_]+)=(%d+)') do counts[t] = tonumber(n) end end
  return counts
end

local function format_counts(counts)
  local parts = {}
  for t, n in pairs(counts) do parts[#parts + 1] = t .. '=' .. int(n) end
  return table.concat(parts, ',')
end

local function intent(counts, minutes)
  local z, events = model[1], 0
  local types, weights = model[2], model[3]
  for t, n in pairs(counts) do if t ~= 'purchase' then events = events + n end end
  for i, t in ipairs(types) do z = z + weights[i] * math.log(1 + (counts[t] or 0)) end
  z = z + weights[#types + 1] * math.log(1 + events) + weights[#types + 2] * math.log(1 + math.max(minutes, 0))
  return string.format('%.4f', 1 / (1 + math.exp(-z)))
end


-- Merge t into the sessions zset (general, order-independent case).
local function merge_into(sessions, t)
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
  redis.call('ZADD', sessions, s, int(s) .. ':' .. int(e))
end

for _, d in ipairs(deltas) do
  local fields = keys[d[1]]
  local base = string.sub(fields, 1, -3)
  if redis.call('SET', base .. ':seen:' .. d[2], '1', 'NX', 'EX', ttl) then
    applied = applied + 1
    local event_type, ts, user_id, anon = d[3], d[4], d[5], d[6]
    local category, product, cart, micros, points = d[7], d[8], d[9], d[10], d[11]
    local names = {'event_count', 'first_seen', 'last_seen', 'ss', 'se', 'engagement', 't:' .. event_type}
    if category ~= '' then names[#names + 1] = 'v:' .. category end
    if product ~= '' and cart ~= 0 then names[#names + 1] = 'c:' .. product end
    if micros ~= 0 then names[#names + 1] = 'purchase_micros' end
    if model then names[#names + 1] = 'sq' end
    local cur = redis.call('HMGET', fields, unpack(names))
    -- Integers below 2^53 go to Redis as plain digits, so no string.format is needed here.
    local out = {'event_count', (tonumber(cur[1]) or 0) + 1, 'updated_at', now,
                 't:' .. event_type, (tonumber(cur[7]) or 0) + 1}
    local first, last = tonumber(cur[2]), tonumber(cur[3])
    if not first or ts < first then out[#out + 1] = 'first_seen'; out[#out + 1] = ts end
    if not last or ts > last then out[#out + 1] = 'last_seen'; out[#out + 1] = ts end
    if points ~= 0 then out[#out + 1] = 'engagement'; out[#out + 1] = (tonumber(cur[6]) or 0) + points end
    local i = 8
    if category ~= '' then out[#out + 1] = names[i]; out[#out + 1] = (tonumber(cur[i]) or 0) + 1; i = i + 1 end
    if product ~= '' and cart ~= 0 then out[#out + 1] = names[i]; out[#out + 1] = (tonumber(cur[i]) or 0) + cart; i = i + 1 end
    if micros ~= 0 then out[#out + 1] = names[i]; out[#out + 1] = (tonumber(cur[i]) or 0) + micros end
    if user_id ~= '' then out[#out + 1] = 'user_id'; out[#out + 1] = user_id end

    -- Sessions: in-order events only touch ss/se; an event before the latest session's
    -- start takes the general path through the zset.
    local ss, se = tonumber(cur[4]), tonumber(cur[5])
    local latest = nil  -- the latest session's counts, when this event belongs to it
    if not ss then
      ss, se = ts, ts
      latest = {}
    elseif ts >= ss and ts <= se + gap then
      if ts > se then se = ts end
      if model then latest = parse_counts(cur[#names] or nil) end
    elseif ts > se + gap then
      redis.call('ZADD', base .. ':sessions', ss, int(ss) .. ':' .. int(se))
      ss, se = ts, ts
      latest = {}
    else
      local sessions = base .. ':sessions'
      redis.call('ZADD', sessions, ss, int(ss) .. ':' .. int(se))
      merge_into(sessions, ts)
      local newest = redis.call('ZREVRANGE', sessions, 0, 0)[1]
      redis.call('ZREM', sessions, newest)
      local sep = string.find(newest, ':', 1, true)
      ss, se = tonumber(string.sub(newest, 1, sep - 1)), tonumber(string.sub(newest, sep + 1))
    end
    out[#out + 1] = 'ss'; out[#out + 1] = ss
    out[#out + 1] = 'se'; out[#out + 1] = se
    if model and latest then
      latest[event_type] = (latest[event_type] or 0) + 1
      out[#out + 1] = 'sq'; out[#out + 1] = format_counts(latest)
      out[#out + 1] = 'intent_score'; out[#out + 1] = intent(latest, (se - ss) / 60000)
    end
    redis.call('HSET', fields, unpack(out))

    if anon ~= '' then redis.call('SADD', base .. ':anon', anon) end
    local products = base .. ':products'
    if product ~= '' then redis.call('ZADD', products, 'GT', ts, product) end
    -- Keep the 10 newest products; trimming every 10th event bounds the zset at 20.
    if (tonumber(cur[1]) or 0) % 10 == 9 then redis.call('ZREMRANGEBYRANK', products, 0, -11) end
  end
end
if not ARGV[6] or ARGV[6] == '' then return applied end

-- The state the rules engine reads, in the same call: no extra round trip.
local reports = {}
for _, index in ipairs(cmsgpack.unpack(ARGV[6])) do
  local fields = keys[index]
  local base = string.sub(fields, 1, -3)
  local sessions = redis.call('ZRANGE', base .. ':sessions', 0, -1)
  local products = {}
  if ARGV[7] == '1' then products = redis.call('ZREVRANGE', base .. ':products', 0, 9, 'WITHSCORES') end
  reports[#reports + 1] = {
    index, redis.call('HGETALL', fields), redis.call('SMEMBERS', base .. ':anon'), sessions,
    redis.call('ZRANGE', base .. ':owner', 0, 0), redis.call('HGETALL', base .. ':fires'), products,
  }
end
return {applied, reports}
