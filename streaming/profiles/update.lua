#!lua name=pulse_update
-- A Redis function library (Redis/Valkey >= 7). FCALL pulse_update: apply a batch of profile
-- deltas atomically, each event at most once. The store loads it under a name carrying a
-- digest of this text (streaming/profiles/store.py), so two versions of the app never share it.
-- The library keeps decoded rule plans between calls (see ``plans``); nothing else outlives a call.
-- KEYS:  the fields-hash key ("<base>:p") of each profile the batch touches; every other key
--        of a profile is "<base>:<suffix>" with the same hash tag, so it lives in the same slot.
--        On a Redis Cluster, where declared keys must share one slot, KEYS is empty and ARGV[8]
--        is a msgpack array of these keys instead: a call carries only profiles of one master
--        and the function is registered with the allow-cross-slot-keys flag, so one call may
--        touch several slots of that master; each profile stays in its own slot.
-- ARGV:  1 dedupe TTL seconds, 2 now ms, 3 session gap ms,
--        4 msgpack array of deltas: {key_index, event_id, event_type, ts_ms, user_id,
--          anonymous_id, category, product_id, cart_change, purchase_micros, engagement, ops, marker}
--          ops: trait cell ops, flat {field, code, value, keep-from day, ...} (streaming/traits/cells.py)
--          marker: the dedupe marker's value, g<generation> of its trait set (streaming/traits/registration.py)
--        5 intent model, msgpack {bias, feature types, weights} (streaming/profiles/intent.py), or 
--        6 msgpack array of key indices to report on (or ''), 7 '1' to report last products
--        8 (cluster only) the keys, see KEYS, else ''
--        9 the rules prefilter (streaming/rules/prefilter.py), msgpack, or '': with it the
--          rules of each delta's event type are evaluated on its person right after its
--          update (duplicates too: a redelivered event still gets its decisions)
--        10 '1' for a *decide* call: it applies nothing and only evaluates the rules, on the
--          people as they are (for events whose person changed after their update)
--        11 the time (ms) fire states are judged at (cooldowns), else ARGV[2]
-- Returns the number of deltas applied (the rest were duplicates); with reports
-- {applied, reports}; with a prefilter {applied, reports, candidates, stitched}: candidates
-- are, for each event with rules that may fire, {event_id, {rule, certain, fire count, ...},
-- person, user_id} (see prefilter below); stitched lists {event_id, {part ids}} for events
-- whose person was other than their own profile when evaluated; only profiles with an
-- uncertain candidate are reported.
-- Semantics are those of streaming/profiles/reference.py; every change commutes.
-- Fields: event_count, first_seen, last_seen, user_id, updated_at, engagement, purchase_micros,
-- t:<type>, v:<category>, c:<product>, ss/se = the latest session's bounds, and the trait
-- cells x<code>:<trait>:<day>:<key> (streaming/traits/cells.py); earlier sessions are
-- "<start>:<end>" members of the <base>:sessions zset (score = start).
-- The call being run, set by update() at the bottom; the helpers read them.
local keys, ttl, now, gap, model, plan, rules_now, cluster
-- What the prefilter found in this call (see prefilter below).
local candidates, candidate_profiles, stitched
-- Decoded rule plans by their argument, kept between calls: each rule's condition is compiled
-- the first time an event needs it and reused by later calls. Each rule set sends one argument
-- (several app versions or rule files may share a server); past PLANS_KEPT the cache starts over.
local plans, plans_kept, PLANS_KEPT = {}, 0, 64

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


-- Trait cells (streaming/traits/cells.py, ``combine``): the merged cell, or nil when unchanged.
local LN2 = 0.6931471805599453  -- math.log(2); the library's load step cannot call math
local function bytes_less(a, b)  -- byte order, whatever the server's locale
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
local function order_less(a, b)  -- "<ms>:<event_id>:<json>" by event time, ties by event_id
  local ta, ea = string.match(a, '^(%-?%d+):([^:]*):')
  local tb, eb = string.match(b, '^(%-?%d+):([^:]*):')
  ta, tb = tonumber(ta), tonumber(tb)
  if ta ~= tb then return ta < tb end
  return bytes_less(ea, eb)
end
local function combine(code, cur, v)
  if not cur then return v end
  if code == 'n' then return tonumber(cur) + v
  elseif code == 'lo' then if tonumber(v) < tonumber(cur) then return v end
  elseif code == 'hi' then if tonumber(v) > tonumber(cur) then return v end
  elseif code == 'f' then if order_less(v, cur) then return v end
  elseif code == 'l' then if order_less(cur, v) then return v end
  elseif code == 'd' then
    local a, b = tonumber(cur), tonumber(v)
    local hi, lo = math.max(a, b), math.min(a, b)
    return string.format('%.17g', hi + math.log(1 + 2 ^ (lo - hi)) / LN2)
  end
  return nil
end

-- Drops the cells of windowed traits older than their keep-from day; called when a new day's
-- cell was created, so at most once per trait, key and day.
local function trim_cells(fields, trims)
  local dels = {}
  local names = redis.call('HKEYS', fields)
  for _, trim in ipairs(trims) do
    local prefix, keep = trim[1], trim[2]
    for _, name in ipairs(names) do
      if string.sub(name, 1, #prefix) == prefix then
        local day = tonumber(string.match(name, '^x%a+:[^:]*:(%d*):'))
        if day and day < keep then dels[#dels + 1] = name end
      end
    end
  end
  if #dels > 0 then redis.call('HDEL', fields, unpack(dels)) end
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

-- Rules prefilter (streaming/rules/prefilter.py): three-valued conditions over each event's
-- person right after its update (in a decide call: as the checkpoint's updates left it). A
-- rule is dropped only when its condition is certainly false or its fire state certainly
-- forbids it; a rule certainly true is marked so; everything else is left to the exact
-- evaluation in Python.
local UNKNOWN = {}
local EVENT_FIELDS = {event_id = 2, event_type = 3, category = 7}
-- The event being evaluated and what was read for it, afresh for each event (the profile
-- changes between events): its profile's key base, its person's parts (false: not read yet;
-- nil: not readable here), the person's numbers by field name, the fields to read at once,
-- and those fields' values as the event's own update left them (nil: not updated here).
local ev_delta, ev_base, ev_parts, ev_numbers, ev_prefetch, ev_uncertain, ev_updated

local function encode_id(id) return (string.gsub(string.gsub(string.gsub(id, '%%', '%%25'), '{', '%%7B'), '}', '%%7D')) end
local function decode_id(id) return (string.gsub(string.gsub(string.gsub(id, '%%7D', '}'), '%%7B', '{'), '%%25', '%%')) end

-- Adds the parts' values of these fields up into ev_numbers (false when no part has one).
local function read_numbers(names)
  local sums = {}
  for _, part in ipairs(ev_parts) do
    local values = redis.call('HMGET', part .. ':p', unpack(names))
    for i = 1, #names do
      local x = values[i]
      if x then sums[i] = (sums[i] or 0) + tonumber(x) end
    end
  end
  for i, name in ipairs(names) do ev_numbers[name] = sums[i] or false end
end

-- The owner of a profile: the user of its earliest link, unless it is a user's own profile
-- (it has a user_id field): a user id is a person of its own, whatever links name it.
local function owner_of(base)
  local owner = redis.call('ZRANGE', base .. ':owner', 0, 0)[1]
  if owner and redis.call('HEXISTS', base .. ':p', 'user_id') == 1 then return nil end
  return owner
end

-- The key bases of the person the profile belongs to (streaming/profiles/identity.py): its
-- owning user, else itself; then the anonymous ids that person owns, in id order. On a
-- cluster the other parts may live on other nodes: nil when the person has any. The fields
-- the event's rules read are fetched with it, one call per part.
local function find_parts(base)
  if redis.call('EXISTS', base .. ':owner', base .. ':anon') == 0 then return {base} end  -- the usual case
  if cluster then return nil end
  local owner = owner_of(base)
  local head, encoded = string.match(base, '^(.-{)(.*)}$')
  local person, person_base = decode_id(encoded), base
  if owner and owner ~= person then person, person_base = owner, head .. encode_id(owner) .. '}' end
  local anonymous = redis.call('SMEMBERS', person_base .. ':anon')
  local parts = {person_base}
  table.sort(anonymous)
  for _, id in ipairs(anonymous) do
    if id ~= person then
      local part = head .. encode_id(id) .. '}'
      if owner_of(part) == person then parts[#parts + 1] = part end
    end
  end
  return parts
end

local function person_parts()
  if ev_parts == false then
    ev_parts = find_parts(ev_base)
    if ev_parts and #ev_prefetch > 0 then
      if ev_updated and #ev_parts == 1 and ev_parts[1] == ev_base then ev_numbers = ev_updated else read_numbers(ev_prefetch) end
    end
  end
  return ev_parts
end

-- A field of the person's fields hashes added up over its parts; nil when no part has it.
local function number(name)
  local v = ev_numbers[name]
  if v == nil then
    read_numbers({name})
    v = ev_numbers[name]
  end
  return v or nil
end

-- The number of sessions over all parts: intervals at most the session gap apart merge
-- (merge_sessions in streaming/profiles/identity.py).
local function session_count()
  local intervals = {}
  for _, part in ipairs(ev_parts) do
    for _, member in ipairs(redis.call('ZRANGE', part .. ':sessions', 0, -1)) do
      local sep = string.find(member, ':', 1, true)
      intervals[#intervals + 1] = {tonumber(string.sub(member, 1, sep - 1)), tonumber(string.sub(member, sep + 1))}
    end
    local bounds = redis.call('HMGET', part .. ':p', 'ss', 'se')
    if bounds[1] then intervals[#intervals + 1] = {tonumber(bounds[1]), tonumber(bounds[2])} end
  end
  table.sort(intervals, function(a, b) return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2]) end)
  local count, last_end = 0, nil
  for _, interval in ipairs(intervals) do
    if last_end and interval[1] <= last_end + gap then
      if interval[2] > last_end then last_end = interval[2] end
    else
      count, last_end = count + 1, interval[2]
    end
  end
  return count
end

-- Profile numbers as merged_view computes them: counters add up over the parts; the intent
-- score is the first part's that has one (the person's own first).
local PROFILE_NUMBERS = {
  event_count = function() return number('event_count') or 0 end,
  engagement_score = function() return number('engagement') or 0 end,
  purchase_total = function() return (number('purchase_micros') or 0) / 1000000 end,
  intent_score = function()
    if #ev_parts == 1 then return number('intent_score') or 0 end
    for _, part in ipairs(ev_parts) do
      local score = redis.call('HGET', part .. ':p', 'intent_score')
      if score then return tonumber(score) end
    end
    return 0
  end,
  session_count = function()
    if #ev_parts > 1 then return session_count() end
    return redis.call('ZCARD', ev_parts[1] .. ':sessions') + (number('ss') and 1 or 0)
  end,
}

-- How many entries a profile map shows (the cart: positive quantities only), over all parts.
local function map_size(prefix)
  local name = 'size:' .. prefix
  if ev_numbers[name] == nil then
    local sums, n = {}, 0
    for _, part in ipairs(ev_parts) do
      local flat = redis.call('HGETALL', part .. ':p')
      for i = 1, #flat, 2 do
        if string.sub(flat[i], 1, 2) == prefix .. ':' then sums[flat[i]] = (sums[flat[i]] or 0) + tonumber(flat[i + 1]) end
      end
    end
    for _, v in pairs(sums) do
      if prefix ~= 'c' or v > 0 then n = n + 1 end
    end
    ev_numbers[name] = n
  end
  return ev_numbers[name]
end

-- A plan node compiled into a function of the current event (once per call, not per event).
local compile
local COMPARE = {
  ['<'] = function(x, y) return x < y end, ['<='] = function(x, y) return x <= y end,
  ['>'] = function(x, y) return x > y end, ['>='] = function(x, y) return x >= y end,
}
compile = function(node)
  local op = node[1]
  if op == 'k' then
    local value = node[2]
    return function() return value end
  elseif op == 'e' then
    local index = EVENT_FIELDS[node[2]]
    return function() return ev_delta[index] end
  elseif op == 'and' or op == 'or' then
    local stop = (op == 'or')  -- the value that decides: false for and, true for or
    local a, b = compile(node[2]), compile(node[3])
    return function()
      local x = a()
      if x == stop then return stop end
      local y = b()
      if y == stop then return stop end
      if x == not stop and y == not stop then return not stop end
      return UNKNOWN
    end
  elseif op == 'not' then
    local a = compile(node[2])
    return function()
      local x = a()
      if x == true then return false elseif x == false then return true end
      return UNKNOWN
    end
  elseif op == 'cmp' then
    local c, a, b = node[2], compile(node[3]), compile(node[4])
    if c == '==' or c == '!=' then
      local equal = (c == '==')
      return function()
        local x, y = a(), b()
        if x == UNKNOWN or y == UNKNOWN or type(x) ~= type(y) then return UNKNOWN end
        return (x == y) == equal
      end
    end
    local compare = COMPARE[c]
    if not compare then return function() return UNKNOWN end end
    return function()
      local x, y = a(), b()
      if type(x) ~= 'number' or type(y) ~= 'number' then return UNKNOWN end  -- UNKNOWN is a table
      return compare(x, y)
    end
  elseif op == 'p' then
    local read = PROFILE_NUMBERS[node[2]]
    return function()
      if not person_parts() then return UNKNOWN end
      return read()
    end
  elseif op == 'size' then
    local prefix = node[2]
    return function()
      if not person_parts() then return UNKNOWN end
      return map_size(prefix)
    end
  elseif op == 'm' or op == 'in' then
    local prefix, key_of, membership = node[2], compile(node[3]), (op == 'in')
    return function()
      if not person_parts() then return UNKNOWN end
      local key = key_of()
      if type(key) ~= 'string' then return UNKNOWN end
      local v = number(prefix .. ':' .. key)
      if v ~= nil and prefix == 'c' and v <= 0 then v = nil end  -- the cart shows positive quantities only
      if membership then return v ~= nil end
      return v or UNKNOWN  -- a missing key is a CEL error
    end
  end
  return function() return UNKNOWN end
end

-- Whether the rule's fire state (cooldown, cap, this very event) may let it fire: the
-- person's latest fire over its parts, with the highest count (merge_decision_states).
-- Returns (may fire, the state was read exactly, the person's fire count so far).
local function may_fire(rule)
  local how, key = rule[4], rule[2]
  if how[1] == 1 then
    local value = ev_delta[EVENT_FIELDS[how[2]]]
    if value ~= '' then key = key .. ':' .. value end
  elseif how[1] ~= 0 then
    return true, false, 0
  end
  if not person_parts() then return true, false, 0 end
  local latest, latest_event, count = nil, nil, 0
  for _, part in ipairs(ev_parts) do
    local state = redis.call('HGET', part .. ':fires', key)
    if state then
      local at, n, event_id = string.match(state, '^(%d+):(%d+):(.*)$')
      if not at then return true, false, 0 end
      at, n = tonumber(at), tonumber(n)
      if latest == nil or at > latest then latest, latest_event = at, event_id end
      if n > count then count = n end
    end
  end
  if latest == nil then return true, true, 0 end
  if latest_event == ev_delta[2] then return false end
  if rule[5] > 0 and count >= rule[5] then return false end
  return rules_now - latest >= rule[6], true, count
end

-- Runs a rule plan on the current event, adding it to ``may`` if it may fire, as {rule number,
-- 1 when certain to fire (exact condition and state) else 0, fire count so far}. Only rules
-- whose plan allows it (rule[7]: no profile in params, not a segment) are certain.
local function run_one(rule, may)
  local test = rule.condition
  if not test then test = compile(cjson.decode(rule[3])); rule.condition = test end  -- on first use
  local condition = test()
  if condition ~= false then
    local allowed, exact, count = may_fire(rule)
    if allowed then
      local certain = (condition == true and exact and rule[7]) and 1 or 0
      may[#may + 1] = rule[1]; may[#may + 1] = certain; may[#may + 1] = count
      if certain == 0 then ev_uncertain = true end
    end
  end
end

local function run(rules, may)
  for _, rule in ipairs(rules) do run_one(rule, may) end
end

-- A type plan: rules for every event, rules guarded by ``event.<field> == value`` by value,
-- and tiers of rules requiring ``number >= c`` in ascending c: those above the number are skipped.
local function run_type_plan(type_plan, may)
  if not type_plan then return end
  run(type_plan['all'], may)
  for name, by_value in pairs(type_plan['by']) do
    local group = by_value[ev_delta[EVENT_FIELDS[name]]]
    if group then run(group['rules'], may) end
  end
  for _, tier in ipairs(type_plan['tiers']) do
    if not tier.number then tier.number = compile(cjson.decode(tier[1])) end
    local value = tier.number()
    local known = type(value) == 'number'
    for _, entry in ipairs(tier[2]) do
      if known and (entry[1] > value or (entry[1] == value and entry[2])) then break end
      run_one(entry[3], may)
    end
  end
end

-- Adds the fields a plan part reads (fixed names, and prefix..':'..<event field>) to names,
-- once each. Returns whether they depend on the event's type and category only.
local function add_reads(reads, d, names)
  local by_type_and_category = true
  for _, name in ipairs(reads['fields']) do
    if not names[name] then names[name] = true; names[#names + 1] = name end
  end
  for _, pair in ipairs(reads['keyed']) do
    local name = pair[1] .. ':' .. d[EVENT_FIELDS[pair[2]]]
    if not names[name] then names[name] = true; names[#names + 1] = name end
    if pair[2] == 'event_id' then by_type_and_category = false end
  end
  return by_type_and_category
end

-- The fields a type plan's rules may read for this event: those of its unguarded rules and
-- tiers, and those of the guarded group the event matches.
local function add_fields(type_plan, d, names)
  if not type_plan then return true end
  local by_type_and_category = add_reads(type_plan, d, names)
  for name, by_value in pairs(type_plan['by']) do
    local group = by_value[d[EVENT_FIELDS[name]]]
    if group then
      if name == 'event_id' then by_type_and_category = false end
      if not add_reads(group, d, names) then by_type_and_category = false end
    end
  end
  return by_type_and_category
end

-- The fields the rules of a delta's event type read, read at once with the person's parts
-- (kept with the plan, by event type and category).
local function prefetch_names(d)
  local key = d[3] .. '\0' .. d[7]
  local prefetched = plan.prefetched
  local names = prefetched[key]
  if names then return names end
  names = {}
  local typed = add_fields(plan['types'][d[3]], d, names)
  if add_fields(plan['any'], d, names) and typed then prefetched[key] = names end
  return names
end

-- The person id and user id a decision names (merged_view's profile_id and user_id).
local function person_ids()
  local person = decode_id(string.match(ev_parts[1], '{(.*)}$'))
  local user_id = redis.call('HGET', ev_parts[1] .. ':p', 'user_id')
  if not user_id and #ev_parts > 1 then user_id = person end
  return person, user_id or ''
end

-- Evaluates the rules of a delta's event type; an event with candidates adds
-- {event_id, {rule, certain, count, ...}, person id, user id} (ids '' when not read) to the
-- reply. Its profile is reported only when a candidate is uncertain (Python evaluates those).
-- ``names`` are the fields its rules read and ``updated`` their values after the event's own
-- update (nil in a decide call).
local function prefilter(d, base, names, updated)
  local typed, any = plan['types'][d[3]], plan['any']
  ev_delta, ev_base, ev_parts, ev_numbers, ev_prefetch, ev_updated = d, base, false, {}, names, updated
  ev_uncertain = false
  local may = {}
  run_type_plan(typed, may)
  run_type_plan(any, may)
  if #may > 0 then
    local person, user_id = '', ''
    if ev_parts then person, user_id = person_ids() end
    candidates[#candidates + 1] = {d[2], may, person, user_id}
    if ev_uncertain then candidate_profiles[d[1]] = true end
  end
  if ev_parts and (#ev_parts > 1 or ev_parts[1] ~= base) then  -- a person of other profiles
    local ids = {}
    for i, part in ipairs(ev_parts) do ids[i] = decode_id(string.match(part, '{(.*)}$')) end
    stitched[#stitched + 1] = {d[2], ids}
  end
end

-- The plan an argument encodes, decoded once and kept.
local function plan_of(argument)
  local found = plans[argument]
  if found then return found end
  if plans_kept >= PLANS_KEPT then plans, plans_kept = {}, 0 end
  found = cmsgpack.unpack(argument)
  local any = found['any']
  found.prefetched = {}
  found.any_rules = #any['all'] > 0 or next(any['by']) ~= nil or #any['tiers'] > 0
  plans[argument], plans_kept = found, plans_kept + 1
  return found
end

local function update(KEYS, ARGV)
  keys = KEYS
  cluster = ARGV[8] and ARGV[8] ~= ''
  if cluster then keys = cmsgpack.unpack(ARGV[8]) end
  ttl, now, gap = ARGV[1], ARGV[2], tonumber(ARGV[3])
  local deltas = cmsgpack.unpack(ARGV[4])
  model = nil
  if ARGV[5] and ARGV[5] ~= '' then model = cmsgpack.unpack(ARGV[5]) end
  local applied = 0
  plan = nil
  if ARGV[9] and ARGV[9] ~= '' then plan = plan_of(ARGV[9]) end
  local decide_only = plan and ARGV[10] == '1'
  rules_now = tonumber(ARGV[11] and ARGV[11] ~= '' and ARGV[11] or now)
  candidates, candidate_profiles, stitched = {}, {}, {}
  local any_rules = plan and plan.any_rules

  for _, d in ipairs(deltas) do
    local fields = keys[d[1]]
    local base = string.sub(fields, 1, -3)
    local prefetch, updated = nil, nil  -- the rules' fields, read along with the update's
    if plan and not decide_only and (plan['types'][d[3]] or any_rules) then prefetch = prefetch_names(d) end
    if decide_only then
      prefilter(d, base, prefetch_names(d))  -- nothing is applied
    elseif redis.call('SET', base .. ':seen:' .. d[2], d[13] or '1', 'NX', 'EX', ttl) then
      applied = applied + 1
      local event_type, ts, user_id, anon = d[3], d[4], d[5], d[6]
      local category, product, cart, micros, points = d[7], d[8], d[9], d[10], d[11]
      local names = {'event_count', 'first_seen', 'last_seen', 'ss', 'se', 'engagement', 't:' .. event_type}
      if category ~= '' then names[#names + 1] = 'v:' .. category end
      if product ~= '' and cart ~= 0 then names[#names + 1] = 'c:' .. product end
      if micros ~= 0 then names[#names + 1] = 'purchase_micros' end
      if model then names[#names + 1] = 'sq' end
      local sq_index = #names
      local ops, ops_from = d[12], #names + 1
      if ops then for j = 1, #ops, 4 do names[#names + 1] = ops[j] end end
      local read_from = #names + 1
      if prefetch then for _, name in ipairs(prefetch) do names[#names + 1] = name end end
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
        if model then latest = parse_counts(cur[sq_index] or nil) end
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
      local trims = nil
      if ops then
        for j = 1, #ops, 4 do
          local cur_cell = cur[ops_from + (j - 1) / 4]
          local new = combine(ops[j + 1], cur_cell, ops[j + 2])
          if new ~= nil then out[#out + 1] = ops[j]; out[#out + 1] = new end
          if not cur_cell and ops[j + 3] > 0 then
            trims = trims or {}
            trims[#trims + 1] = {string.match(ops[j], '^(x%a+:[^:]*:)'), ops[j + 3]}
          end
        end
      end
      redis.call('HSET', fields, unpack(out))
      if trims then trim_cells(fields, trims) end
      if prefetch then  -- the rules' fields as this update left them
        updated = {}
        for i, name in ipairs(prefetch) do
          local v = cur[read_from + i - 1]
          updated[name] = v and tonumber(v) or false
        end
        for i = 1, #out, 2 do
          if updated[out[i]] ~= nil then updated[out[i]] = tonumber(out[i + 1]) or false end
        end
      end

      if anon ~= '' then redis.call('SADD', base .. ':anon', anon) end
      local products = base .. ':products'
      if product ~= '' then redis.call('ZADD', products, 'GT', ts, product) end
      -- Keep the 10 newest products; trimming every 10th event bounds the zset at 20.
      if (tonumber(cur[1]) or 0) % 10 == 9 then redis.call('ZREMRANGEBYRANK', products, 0, -11) end
    end
    if prefetch then prefilter(d, base, prefetch, updated) end
  end
  local watched = ARGV[6] and ARGV[6] ~= ''
  if not watched and not plan then return applied end

  -- The state the rules engine reads, in the same call: no extra round trip.
  local reports = {}
  for _, index in ipairs(watched and cmsgpack.unpack(ARGV[6]) or {}) do
    if not plan or candidate_profiles[index] then
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
  end
  if plan then return {applied, reports, candidates, stitched} end
  return {applied, reports}
end

-- FCALL pulse_backfill (streaming/traits/backfill.py): add traits' cells for the events they have
-- not counted, on one profile, atomically with its stream updates. KEYS[1]: the fields hash.
-- ARGV[1]: msgpack {{storage id -> generation it went live with}, {{event_id, arrived long
-- ago (1/0), {field, code, value, keep-from day, storage id, ...}}, ...}}. An event counts for a
-- trait when its dedupe marker says it was applied by an older generation, or when it has no
-- marker but arrived longer ago than the dedupe window (applied, its marker expired); one
-- without a marker that arrived recently is not applied yet, and the stream will count it.
-- "bf:<storage id>" marks the traits done on this profile: a second run adds nothing.
-- Returns the number of ops applied, or -1 when the profile does not exist.
local function backfill(KEYS, ARGV)
  local fields = KEYS[1]
  if redis.call('EXISTS', fields) == 0 then return -1 end
  local base = string.sub(fields, 1, -3)
  local job = cmsgpack.unpack(ARGV[1])
  local live, events = job[1], job[2]
  local done = {}
  for sid, _ in pairs(live) do
    if redis.call('HEXISTS', fields, 'bf:' .. sid) == 1 then done[sid] = true end
  end
  local pending, applied = {}, 0
  for _, e in ipairs(events) do
    local marker = redis.call('GET', base .. ':seen:' .. e[1])
    local generation = nil
    if marker then generation = tonumber(string.match(marker, '^g(%d+)$')) or 0 end
    local ops = e[3]
    for j = 1, #ops, 5 do
      local sid = ops[j + 4]
      local missing = (generation == nil and e[2] == 1) or (generation ~= nil and generation < live[sid])
      if not done[sid] and missing then
        local field = ops[j]
        local cur = pending[field]
        if cur == nil then cur = redis.call('HGET', fields, field) end
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
  if #out > 0 then redis.call('HSET', fields, unpack(out)) end
  return applied
end

redis.register_function{function_name = 'pulse_update', callback = update, flags = {'allow-cross-slot-keys'}}
redis.register_function{function_name = 'pulse_backfill', callback = backfill}
