#!lua name=pulse_update
-- A Redis function library (Redis/Valkey >= 7). FCALL pulse_update: apply a batch of profile
-- deltas atomically, each event at most once. The store loads it under a name carrying a
-- digest of its text (streaming/profiles/functions.py), so two versions of the app never share
-- it; that text includes the rules prefilter (streaming/rules/prefilter.lua, see @include below).
-- The library keeps decoded rule plans (see ``plans``) and the intent model with its scores'
-- parts by session counts (see ``counts_z``) between calls; nothing else outlives a call.
-- KEYS:  the fields-hash key ("<base>:p") of each profile the batch touches; every other key
--        of a profile is "<base>:<suffix>" with the same hash tag, so it lives in the same slot.
--        On a Redis Cluster, where declared keys must share one slot, KEYS is empty and ARGV[8]
--        is a msgpack array of these keys instead: a call carries only profiles of one master
--        and the function is registered with the allow-cross-slot-keys flag, so one call may
--        touch several slots of that master; each profile stays in its own slot.
-- ARGV:  1 dedupe TTL seconds, 2 now ms, 3 session gap ms,
--        4 msgpack array of the deltas, flat, one after the other (one table to decode, not two
--          per delta): key_index, event_id, event_type, ts_ms, user_id, anonymous_id, category,
--          product_id, marker, n, then the delta's n op values (streaming/profiles/codec.py)
--          marker: the dedupe marker's value, g<generation> of its trait set (streaming/traits/registration.py)
--          ops: the trait registry's ops, flat field, code, value, keep-from day, ...
--          (streaming/traits/ops.py, cells.py): every built-in counter and the user's traits
--        5 intent model, msgpack {bias, feature types, weights} (streaming/profiles/intent.py), or
--          '' (decoded once per argument and kept between calls, see counts_z)
--        6 msgpack array of key indices to report on (or ''), 7 '1' to report last products
--        8 (cluster only) the keys, see KEYS, else ''
--        9 the rules prefilter (streaming/rules/prefilter.py), msgpack, or '': with it the
--          rules of each delta's event type are evaluated on its person right after its
--          update (duplicates too: a redelivered event still gets its decisions)
--        10 '1' for a *decide* call: it applies nothing and only evaluates the rules, on the
--          people as they are (for events whose person changed after their update); its
--          deltas carry no ops (streaming/profiles/codec.py, decide_row)
--        11 the time (ms) fire states are judged at (cooldowns), else ARGV[2]
--        12 '1' to refuse the call (error PULSE_FORGET_MIRROR_MISSING, nothing applied) when
--          the forget mirror's marker key is gone: Redis was wiped, and the suppressions must be
--          restored from the durable record first (streaming/profiles/suppression.py); one server only
--        13 (one server only) the identity links of the batch, recorded before any delta is
--          applied, as pulse_link would (see link below): msgpack flat array of the anonymous
--          id's owner key, event time ms, user id, ... (codec.links_argument), or absent/''
-- Forget: an event whose profile has a suppression ("<base>:forgotten", field at = forget time
-- ms) with event time <= that time is skipped, never applied nor ruled on: its dedupe marker is
-- set to 'f' and the suppression's "skipped" counts it once (core/forgetting.py is the rule).
-- Returns the number of deltas applied (the rest were duplicates or forgotten); with reports,
-- a prefilter or forgotten events {applied, reports, candidates, stitched, skipped forgotten}: candidates
-- are, for each event with rules that may fire, {event_id, {rule, certain, fire count, ...},
-- person, user_id} (see prefilter in streaming/rules/prefilter.lua); stitched lists {event_id,
-- {part ids}} for events whose person was other than their own profile when evaluated (none in
-- a decide call: Python reads the updates' only); only
-- profiles with an uncertain candidate are reported.
-- Semantics are those of streaming/profiles/reference.py; every change commutes.
-- Fields: user_id, updated_at, ss/se = the latest session's bounds, and the fields the trait
-- registry's ops name (streaming/traits/definition.py): event_count, first_seen, last_seen,
-- t:<type>, v:<category>, c:<product>, purchase_micros, engagement and the cells
-- x<code>:<trait>:<day>:<key>. This script knows none of them: it merges each op by its code.
-- Earlier sessions are "<start>:<end>" members of the <base>:sessions zset (score = start).
-- The call being run, set by update() at the bottom; the helpers read them (the prefilter's too,
-- so they are declared before its included text).
local keys, ttl, now, gap, model, plan, rules_now, cluster
-- Library functions as upvalues, bound when a registered function is entered (the library's
-- load step cannot read them): an upvalue costs less than a global and its field at each use.
local r_call, to_number, s_format, s_sub, s_find, s_match, s_gmatch
local m_log, m_exp, m_max, m_min, t_unpack
local function bind()
  if r_call then return end
  r_call, to_number, s_format, s_sub, s_find = redis.call, tonumber, string.format, string.sub, string.find
  s_match, s_gmatch, m_log, m_exp, m_max, m_min = string.match, string.gmatch, math.log, math.exp, math.max, math.min
  t_unpack = unpack
end
-- What the prefilter found in this call (see prefilter in streaming/rules/prefilter.lua).
-- stitched_wanted: false in a decide call, whose stitched list Python does not read (prefiltered.add).
local candidates, candidate_profiles, stitched, stitched_wanted
-- Decoded rule plans by their argument (plan_of, streaming/rules/prefilter.lua), kept between
-- calls: each rule's condition is compiled the first time an event needs it and reused by later
-- calls. Each rule set sends one argument (several app versions or rule files may share a
-- server); past PLANS_KEPT the cache starts over.
local plans, plans_kept, PLANS_KEPT = {}, 0, 64

local function int(x) return s_format('%d', x) end

-- Intent: the latest session's counts by type ('sq' = "type=n,type=n") scored by the logistic
-- model. The event's count is raised by editing the text in place (event types are [a-z0-9_]),
-- not by rebuilding it from a table: the order of the pairs does not matter to the parse.
local function count_once_more(text, event_type)
  if text == '' then return event_type .. '=1' end
  local key = event_type .. '='
  local at = 1
  if s_sub(text, 1, #key) ~= key then
    at = s_find(text, ',' .. key, 1, true)
    if not at then return text .. ',' .. key .. '1' end
    at = at + 1
  end
  local from = at + #key
  local stop = s_find(text, ',', from, true)
  local n = to_number(s_sub(text, from, stop and stop - 1 or -1))
  if stop then return s_sub(text, 1, from - 1) .. int(n + 1) .. s_sub(text, stop) end
  return s_sub(text, 1, from - 1) .. int(n + 1)
end

-- What the counts texts gave, for the model argument ``model_of`` (kept between calls, as the
-- rule plans are; another model starts them over, and past COUNTS_KEPT texts they start over):
-- by text, the score's sum before its minutes term (``counts_z``), and by text and event type,
-- count_once_more's result (``counts_next``). Sessions' counts repeat across people, so most
-- events skip the parse; the numbers are the same, computed in the same order.
local model_of, model_decoded, counts_z, counts_next, counts_kept, COUNTS_KEPT = nil, nil, {}, {}, 0, 4096

local function next_counts(text, event_type)
  local by_type = counts_next[text]
  if not by_type then
    if counts_kept >= COUNTS_KEPT then counts_z, counts_next, counts_kept = {}, {}, 0 end
    by_type = {}
    counts_next[text], counts_kept = by_type, counts_kept + 1
  end
  local new = by_type[event_type]
  if not new then new = count_once_more(text, event_type); by_type[event_type] = new end
  return new
end

-- The model's score of a session's counts text. Terms of types the session has none of add
-- exactly zero, so they are skipped: the sum, in the model's order, is the same number.
local function intent(text, minutes)
  local weights = model[3]
  local z = counts_z[text]
  if not z then
    local events, counts, types = 0, {}, model[2]
    z = model[1]
    for t, n in s_gmatch(text, '([%w_]+)=(%d+)') do
      n = to_number(n)
      counts[t] = n
      if t ~= 'purchase' then events = events + n end
    end
    for i = 1, #types do
      local n = counts[types[i]]
      if n then z = z + weights[i] * m_log(1 + n) end
    end
    z = z + weights[#types + 1] * m_log(1 + events)
    if counts_kept >= COUNTS_KEPT then counts_z, counts_next, counts_kept = {}, {}, 0 end
    counts_z[text], counts_kept = z, counts_kept + 1
  end
  z = z + weights[#model[2] + 2] * m_log(1 + m_max(minutes, 0))
  return s_format('%.4f', 1 / (1 + m_exp(-z)))
end


-- Trait cells (streaming/traits/cells.py, ``combine``): the merged cell, or nil when unchanged.
local LN2 = 0.6931471805599453  -- math.log(2); the library's load step cannot call math
local function bytes_less(a, b)  -- byte order, whatever the server's locale
  for i = 1, m_min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
local function order_less(a, b)  -- "<ms>:<event_id>:<json>" by event time, ties by event_id
  local ta, ea = s_match(a, '^(%-?%d+):([^:]*):')
  local tb, eb = s_match(b, '^(%-?%d+):([^:]*):')
  ta, tb = ta and ta + 0, tb and tb + 0  -- digits: converted once (see combine)
  if ta ~= tb then return ta < tb end
  return bytes_less(ea, eb)
end
-- Numbers read as text are converted by arithmetic (x + 0), not tonumber: the same conversion
-- done once (tonumber converts twice), and as for tonumber, text that is no number is an error.
local function combine(code, cur, v)
  if not cur then return v end
  if code == 'n' then return cur + v
  elseif code == 'lo' then if v + 0 < cur + 0 then return v end
  elseif code == 'hi' then if v + 0 > cur + 0 then return v end
  elseif code == 'f' then if order_less(v, cur) then return v end
  elseif code == 'l' then if order_less(cur, v) then return v end
  elseif code == 'd' then
    local a, b = cur + 0, v + 0
    local hi, lo = m_max(a, b), m_min(a, b)
    return s_format('%.17g', hi + m_log(1 + 2 ^ (lo - hi)) / LN2)
  end
  return nil
end

-- Drops the windowed cells of days before ``keep`` and returns the oldest day left. Runs only
-- when the profile's oldest windowed day (field "w") is before ``keep``: about once a day per
-- active profile, and never for one whose cells all lie within the longest window.
local function trim_cells(fields, keep)
  local dels, oldest = {}, nil
  for _, name in ipairs(r_call('HKEYS', fields)) do
    local day = to_number(s_match(name, '^x%a+:[^:]*:(%d+):'))
    if day then
      if day < keep then dels[#dels + 1] = name
      elseif not oldest or day < oldest then oldest = day end
    end
  end
  if #dels > 0 then r_call('HDEL', fields, t_unpack(dels)) end
  return oldest
end

-- Merge t into the sessions zset (general, order-independent case).
local function merge_into(sessions, t)
  local s, e = t, t
  local candidates = r_call('ZREVRANGEBYSCORE', sessions, t + gap, '-inf', 'LIMIT', 0, 2)
  for _, member in ipairs(candidates) do
    local sep = s_find(member, ':', 1, true)
    local cs, ce = to_number(s_sub(member, 1, sep - 1)), to_number(s_sub(member, sep + 1))
    if t - ce <= gap then
      r_call('ZREM', sessions, member)
      if cs < s then s = cs end
      if ce > e then e = ce end
    end
  end
  r_call('ZADD', sessions, s, int(s) .. ':' .. int(e))
end

-- Whether the event at ``ts`` of the profile at ``base`` is forgotten (core/forgetting.py's rule).
local function forgotten(base, ts)
  local at = r_call('HGET', base .. ':forgotten', 'at')
  return at and ts <= to_number(at)
end

-- Records that an anonymous id was seen with a user (pulse_link below, and ARGV[13] of an update
-- call): ``owner`` is the anonymous id's owner zset, ``ts`` the event time ms, ``user`` the user id.
local function record_link(owner, ts, user)
  -- Already recorded at this time or earlier, the usual case (every event of an identified
  -- visitor repeats its link): ZADD LT would change nothing and answer 0, whatever the checks
  -- below say; one call instead of three.
  local recorded = r_call('ZSCORE', owner, user)
  if recorded and to_number(recorded) <= ts then return 0 end
  local base = s_sub(owner, 1, -7)  -- "<base>:owner"
  if forgotten(base, ts) then return 0 end
  if r_call('HEXISTS', base .. ':unlinked', user) == 1 then return 0 end
  return r_call('ZADD', owner, 'LT', ts, user)
end

-- Rules prefilter: its code lives in streaming/rules/prefilter.lua, put in place of the next
-- line when the library is loaded (streaming/profiles/functions.py).
-- @include streaming/rules/prefilter.lua

local function update(KEYS, ARGV)
  bind()
  keys = KEYS
  cluster = ARGV[8] and ARGV[8] ~= ''
  if cluster then keys = cmsgpack.unpack(ARGV[8]) end
  ttl, now, gap = ARGV[1], ARGV[2], to_number(ARGV[3])
  local deltas = cmsgpack.unpack(ARGV[4])
  local ndeltas = #deltas
  model = nil
  if ARGV[5] and ARGV[5] ~= '' then
    if ARGV[5] ~= model_of then
      model_of, model_decoded = ARGV[5], cmsgpack.unpack(ARGV[5])
      counts_z, counts_next, counts_kept = {}, {}, 0
    end
    model = model_decoded
  end
  local applied = 0
  plan = nil
  if ARGV[9] and ARGV[9] ~= '' then plan = plan_of(ARGV[9]) end
  local decide_only = plan and ARGV[10] == '1'
  rules_now = to_number(ARGV[11] and ARGV[11] ~= '' and ARGV[11] or now)
  candidates, candidate_profiles, stitched = {}, {}, {}
  stitched_wanted = not decide_only
  local any_rules = plan and plan.any_rules
  if ARGV[12] == '1' and r_call('EXISTS', 'pulse:forget:mirror') == 0 then
    return redis.error_reply('PULSE_FORGET_MIRROR_MISSING the forget suppressions are not in Redis')
  end
  local skipped = 0
  if ARGV[13] and ARGV[13] ~= '' then
    local links = cmsgpack.unpack(ARGV[13])
    for i = 1, #links, 3 do record_link(links[i], links[i + 1], links[i + 2]) end
  end
  -- Suppressions are rare: on one server a single EXISTS over the call's profiles tells whether
  -- any of them has one, and without one no event of the call is forgotten (the call is atomic:
  -- none appears meanwhile), so the per-event HGET is skipped. A cluster call spans slots: per event.
  local may_be_forgotten = true
  if not cluster and not decide_only then
    local suppressions = {}
    for i = 1, #keys do suppressions[i] = s_sub(keys[i], 1, -3) .. ':forgotten' end
    may_be_forgotten = #keys > 0 and r_call('EXISTS', t_unpack(suppressions)) > 0
  end

  -- The delta being applied: its first 9 values (what the prefilter reads of an event), in one
  -- table reused for every delta; its ops are deltas[ops_first .. ops_last].
  local d, at = {}, 1
  -- The fields an update reads and the field/value pairs it writes, in two tables reused by
  -- every delta (no table to grow per event): their lengths are nn and no, not #names, #out.
  local names, out = {}, {}
  while at <= ndeltas do
    d[1], d[2], d[3], d[4], d[5], d[6], d[7], d[8], d[9] =
      deltas[at], deltas[at + 1], deltas[at + 2], deltas[at + 3], deltas[at + 4], deltas[at + 5],
      deltas[at + 6], deltas[at + 7], deltas[at + 8]
    local ops_first = at + 10
    local ops_last = at + 9 + deltas[at + 9]
    at = ops_last + 1
    local fields = keys[d[1]]
    local base = s_sub(fields, 1, -3)
    -- the rules' fields, read along with the update's; exact: no cell trimmed after that read
    local prefetch, updated, updated_from, exact = nil, nil, nil, false
    if plan and not decide_only and (plan['types'][d[3]] or any_rules) then prefetch = prefetch_names(d) end
    if decide_only then
      prefilter(d, base, prefetch_names(d))  -- nothing is applied
    elseif may_be_forgotten and forgotten(base, d[4]) then
      prefetch = nil  -- a forgotten event fires nothing
      if not r_call('SET', base .. ':seen:' .. d[2], 'f', 'NX', 'GET', 'EX', ttl) then
        skipped = skipped + 1
        r_call('HINCRBY', base .. ':forgotten', 'skipped', 1)
      end
    -- SET NX GET: nil (false here) when the marker was not there and is set now; a bulk reply,
    -- not the status table a plain SET NX answers.
    elseif not r_call('SET', base .. ':seen:' .. d[2], d[9], 'NX', 'GET', 'EX', ttl) then
      applied = applied + 1
      local event_type, ts, user_id, anon, product = d[3], d[4], d[5], d[6], d[8]
      local nn = 2
      names[1], names[2], names[3] = 'ss', 'se', 'sq'
      if model then nn = 3 end  -- sq: read only with a model
      local ops, ops_from, w_index = deltas, nn + 1, nil
      for j = ops_first, ops_last, 4 do
        nn = nn + 1
        names[nn] = ops[j]
        if ops[j + 3] > 0 then w_index = true end
      end
      if w_index then nn = nn + 1; names[nn] = 'w'; w_index = nn end  -- the oldest windowed day
      local read_from = nn + 1
      if prefetch then
        for i = 1, #prefetch do names[nn + i] = prefetch[i] end
        nn = nn + #prefetch
      end
      local cur = r_call('HMGET', fields, t_unpack(names, 1, nn))
      local no = 2
      out[1], out[2] = 'updated_at', now
      if user_id ~= '' then out[3], out[4], no = 'user_id', user_id, 4 end

      -- Sessions: in-order events only touch ss/se; an event before the latest session's
      -- start takes the general path through the zset.
      local ss, se = cur[1], cur[2]  -- false when missing (x + 0: see combine)
      ss, se = ss and ss + 0 or nil, se and se + 0 or nil
      local was_ss, was_se = ss, se  -- bounds left as they are are not written again
      local latest = nil  -- the latest session's counts ('sq'), when this event belongs to it
      if not ss then
        ss, se = ts, ts
        latest = ''
      elseif ts >= ss and ts <= se + gap then
        if ts > se then se = ts end
        if model then latest = cur[3] or '' end
      elseif ts > se + gap then
        r_call('ZADD', base .. ':sessions', ss, int(ss) .. ':' .. int(se))
        ss, se = ts, ts
        latest = ''
      else
        local sessions = base .. ':sessions'
        r_call('ZADD', sessions, ss, int(ss) .. ':' .. int(se))
        merge_into(sessions, ts)
        local newest = r_call('ZREVRANGE', sessions, 0, 0)[1]
        r_call('ZREM', sessions, newest)
        local sep = s_find(newest, ':', 1, true)
        ss, se = to_number(s_sub(newest, 1, sep - 1)), to_number(s_sub(newest, sep + 1))
      end
      if ss ~= was_ss then out[no + 1], out[no + 2], no = 'ss', ss, no + 2 end
      if se ~= was_se then out[no + 1], out[no + 2], no = 'se', se, no + 2 end
      if model and latest then
        latest = next_counts(latest, event_type)
        out[no + 1], out[no + 2] = 'sq', latest
        out[no + 3], out[no + 4], no = 'intent_score', intent(latest, (se - ss) / 60000), no + 4
      end
      -- The registry's traits: every built-in counter, time and total, and the cells.
      local trim = 0
      local oldest = w_index and cur[w_index]
      oldest = oldest and oldest + 0 or nil
      local was = oldest
      for j = ops_first, ops_last, 4 do
        local cur_cell = cur[ops_from + (j - ops_first) / 4]
        local code, new = ops[j + 1], ops[j + 2]
        if cur_cell then  -- combine's merge; its most common case, a counter, inline
          if code == 'n' then new = cur_cell + new else new = combine(code, cur_cell, new) end
        end
        if new ~= nil then out[no + 1], out[no + 2], no = ops[j], new, no + 2 end
        local keep = ops[j + 3]  -- windowed: the first day the longest window reads
        if keep > 0 then
          if not cur_cell then
            local day = s_match(ops[j], '^x%a+:[^:]*:(%d+):')
            day = day and day + 0  -- digits: converted once (see combine)
            if not oldest or day < oldest then oldest = day end
          end
          if oldest and oldest < keep then trim = keep end
        end
      end
      if trim == 0 and oldest ~= was then out[no + 1], out[no + 2], no = 'w', oldest, no + 2 end
      r_call('HSET', fields, t_unpack(out, 1, no))
      if trim > 0 then r_call('HSET', fields, 'w', trim_cells(fields, trim)) end
      if prefetch then  -- the rules' fields as this update left them (as stored: number() converts)
        -- in the read values themselves, cur[read_from - 1 + position]: no table made for them
        for i = 1, no, 2 do
          local at = prefetch[out[i]]
          if at then cur[read_from - 1 + at] = out[i + 1] end
        end
        updated, updated_from, exact = cur, read_from - 1, trim == 0
      end

      if anon ~= '' then
        r_call('SADD', base .. ':anon', anon)
        -- An identify records its link with the event (streaming/profiles/identity_graph.py):
        -- the earliest per anonymous id, unless ``pulse identity unlink`` suppressed the pair.
        if event_type == 'identify' and anon ~= user_id and r_call('HEXISTS', base .. ':unlinked', anon) == 0 then
          local link, cur_link = int(ts) .. ':' .. d[2], r_call('HGET', base .. ':links', anon)
          if not cur_link or order_less(link .. ':', cur_link .. ':') then r_call('HSET', base .. ':links', anon, link) end
        end
      end
      if product ~= '' then
        -- Keep the 10 newest products: a zset grown past 20 is cut back to 10.
        local products = base .. ':products'
        if r_call('ZADD', products, 'GT', ts, product) == 1 and r_call('ZCARD', products) > 20 then
          r_call('ZREMRANGEBYRANK', products, 0, -11)
        end
      end
    end
    if prefetch then prefilter(d, base, prefetch, updated, updated_from, exact) end
  end
  local watched = ARGV[6] and ARGV[6] ~= ''
  if not watched and not plan then
    if skipped > 0 then return {applied, {}, {}, {}, skipped} end
    return applied
  end

  -- The state the rules engine reads, in the same call: no extra round trip.
  local reports = {}
  for _, index in ipairs(watched and cmsgpack.unpack(ARGV[6]) or {}) do
    if not plan or candidate_profiles[index] then
      local fields = keys[index]
      local base = s_sub(fields, 1, -3)
      local sessions = r_call('ZRANGE', base .. ':sessions', 0, -1)
      local products = {}
      if ARGV[7] == '1' then products = r_call('ZREVRANGE', base .. ':products', 0, 9, 'WITHSCORES') end
      reports[#reports + 1] = {
        index, r_call('HGETALL', fields), r_call('SMEMBERS', base .. ':anon'), sessions,
        r_call('ZRANGE', base .. ':owner', 0, 0), r_call('HGETALL', base .. ':fires'), products,
      }
    end
  end
  if plan then return {applied, reports, candidates, stitched, skipped} end
  return {applied, reports, {}, {}, skipped}
end

-- FCALL pulse_link: record that an anonymous id was seen with a user (streaming/profiles/codec.py,
-- link_command). KEYS[1]: the anonymous id's owner zset; ARGV: event time ms, user id. ``LT``
-- keeps each user's earliest time, so the write is idempotent. Nothing is recorded when the
-- anonymous id is forgotten at or after that time (an event of a forgotten person still in
-- flight links nobody again), nor for a pair that ``pulse identity unlink`` suppressed (the id's
-- "unlinked" hash names the user).
local function link(KEYS, ARGV)
  bind()
  return record_link(KEYS[1], to_number(ARGV[1]), ARGV[2])
end

-- FCALL pulse_suppress: KEYS[1] an id's suppression hash, ARGV[1] a forget time (ms). Keeps the
-- later of the two times, so mirroring a forget twice or out of order is harmless. Returns the time kept.
local function suppress(KEYS, ARGV)
  bind()
  local at = to_number(r_call('HGET', KEYS[1], 'at'))
  local new = to_number(ARGV[1])
  if not at or new > at then r_call('HSET', KEYS[1], 'at', ARGV[1]); at = new end
  return at
end

-- FCALL pulse_backfill (streaming/traits/backfill.py): add traits' cells for the events they have
-- not counted, on one profile, atomically with its stream updates. KEYS[1]: the fields hash.
-- ARGV[1]: msgpack {{storage id -> generation it went live with}, {{event_id, arrived long
-- ago (1/0), {field, code, value, keep-from day, storage id, ...}}, ...}}. An event counts for a
-- trait when its dedupe marker says it was applied by an older generation, or when it has no
-- marker but arrived longer ago than the dedupe window (applied, its marker expired); one
-- without a marker that arrived recently is not applied yet, and the stream will count it.
-- "bf:<storage id>" marks the traits done on this profile: a second run adds nothing.
-- Returns the number of ops applied, or -1 when the profile does not exist or is being rebuilt.
local function backfill(KEYS, ARGV)
  bind()
  local fields = KEYS[1]
  local base = s_sub(fields, 1, -3)
  -- A part being rebuilt (its ":rebuild" key, streaming/profiles/wipe.lua) gets every trait from
  -- the rebuild's re-application: its old events have no marker now and would count twice here.
  if r_call('EXISTS', fields) == 0 or r_call('EXISTS', base .. ':rebuild') == 1 then return -1 end
  local job = cmsgpack.unpack(ARGV[1])
  local live, events = job[1], job[2]
  local done = {}
  for sid, _ in pairs(live) do
    if r_call('HEXISTS', fields, 'bf:' .. sid) == 1 then done[sid] = true end
  end
  local pending, applied = {}, 0
  for _, e in ipairs(events) do
    local marker = r_call('GET', base .. ':seen:' .. e[1])
    local generation = nil
    if marker then generation = to_number(s_match(marker, '^g(%d+)$')) or 0 end
    local ops = e[3]
    if marker == 'f' then ops = {} end  -- skipped as forgotten: never counted
    for j = 1, #ops, 5 do
      local sid = ops[j + 4]
      local missing = (generation == nil and e[2] == 1) or (generation ~= nil and generation < live[sid])
      if not done[sid] and missing then
        local field = ops[j]
        local cur = pending[field]
        if cur == nil then cur = r_call('HGET', fields, field) end
        local new = combine(ops[j + 1], cur or nil, ops[j + 2])
        if new ~= nil then pending[field] = new end
        applied = applied + 1
      end
    end
  end
  local out = {}
  for field, value in pairs(pending) do out[#out + 1] = field; out[#out + 1] = value end
  for sid, _ in pairs(live) do
    if not done[sid] then out[#out + 1] = 'bf:' .. sid; out[#out + 1] = '1' end
  end
  if #out > 0 then r_call('HSET', fields, t_unpack(out)) end
  return applied
end

redis.register_function{function_name = 'pulse_update', callback = update, flags = {'allow-cross-slot-keys'}}
redis.register_function{function_name = 'pulse_backfill', callback = backfill}
redis.register_function{function_name = 'pulse_suppress', callback = suppress}
redis.register_function{function_name = 'pulse_link', callback = link}
