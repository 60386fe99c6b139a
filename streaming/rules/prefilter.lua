-- The rules prefilter of the pulse_update function library: not a library of its own. A Redis
-- function library is one text, so the loader (streaming/profiles/functions.py) puts this file
-- in place of the "-- @include streaming/rules/prefilter.lua" line of
-- streaming/profiles/update.lua, and the function's name carries a digest of the composed text.
-- It reads the call's state that update.lua declares before that line (gap, plan, rules_now,
-- cluster, candidates, candidate_profiles, stitched, stitched_wanted, plans, plans_kept, PLANS_KEPT, and the
-- library functions it binds as upvalues: r_call = redis.call, to_number, s_* = string.*,
-- m_* = math.*, t_unpack = unpack); update()
-- calls plan_of, prefetch_names and prefilter. The plans it runs are built by
-- streaming/rules/prefilter.py.

-- Rules prefilter (streaming/rules/prefilter.py): three-valued conditions over each event's
-- person right after its update (in a decide call: as the checkpoint's updates left it). A
-- rule is dropped only when its condition is certainly false or its fire state certainly
-- forbids it; a rule certainly true is marked so; everything else is left to the exact
-- evaluation in Python.
local UNKNOWN = {}
local EVENT_FIELDS = {event_id = 2, event_type = 3, category = 7}
-- The event being evaluated and what was read for it, afresh for each event (the profile
-- changes between events): its profile's key base, its person's parts (false: not read yet;
-- nil: not readable here), the person's other numbers read here by field name (as stored, or
-- summed; made when first needed; the prefetched fields' are ev_sums below), the fields to read at once (prefetch_names: a list that also maps
-- each name to its position), and those fields' values as the event's own update left them:
-- ev_updated[ev_updated_from + position] (nil: not updated here). ev_values is ev_updated once
-- the person is known to be that profile alone (its numbers are then those values).
local ev_delta, ev_base, ev_parts, ev_numbers, ev_prefetch, ev_uncertain
local ev_updated, ev_updated_from, ev_values
-- Whether ev_updated holds exactly what the profile's hash holds (no cells trimmed after it was
-- read). For a person read part by part (read_parts): each part's values of the prefetched
-- fields, ev_part_values[p][ev_part_from[p] + position] (read once: find_parts reads an
-- anonymous part's with its user_id check), and their sums by position (false: no part has it).
local ev_updated_exact, ev_part_values, ev_part_from, ev_sums
-- The ids of the parts find_parts found by its slow path, in the parts' order (nil: the
-- profile alone, its id not decoded).
local ev_part_ids
-- The candidates table of the next event that has some (most events have none: no table each).
local spare_may = {}

-- Most ids have none of the escaped characters: returned as they are, with no gsub.
local function encode_id(id)
  if not s_find(id, '[%%{}]') then return id end
  return (string.gsub(string.gsub(string.gsub(id, '%%', '%%25'), '{', '%%7B'), '}', '%%7D'))
end
local function decode_id(id)
  if not s_find(id, '%', 1, true) then return id end
  return (string.gsub(string.gsub(string.gsub(id, '%%7D', '}'), '%%7B', '{'), '%%25', '%%'))
end

-- Adds the parts' values of these fields up into ev_numbers (false when no part has one).
local function read_numbers(names)
  if not ev_numbers then ev_numbers = {} end
  local sums = {}
  for p = 1, #ev_parts do
    local values = r_call('HMGET', ev_parts[p] .. ':p', t_unpack(names))
    for i = 1, #names do
      local x = values[i]
      if x then sums[i] = (sums[i] or 0) + to_number(x) end
    end
  end
  for i = 1, #names do ev_numbers[names[i]] = sums[i] or false end
end

-- The key bases of the person the profile belongs to (streaming/profiles/identity.py): its
-- owning user, else itself; then the anonymous ids that person owns, in id order. On a
-- cluster the other parts may live on other nodes: nil when the person has any. The fields
-- the event's rules read are fetched with it, one call per part.
-- A user named as another's anonymous id, or naming a user as its own, may be linked to other
-- users by an identify (streaming/profiles/identity_graph.py): such a person is nil here too,
-- and Python evaluates it over all its users.
local function user_linked(part)
  return r_call('EXISTS', part .. ':owner') == 1 and r_call('HEXISTS', part .. ':p', 'user_id') == 1
end

-- An anonymous part's user_id and prefetched fields, in one HMGET (values[1]: its user_id).
local function part_read(part)
  return r_call('HMGET', part .. ':p', 'user_id', t_unpack(ev_prefetch))
end

-- Whether the own part's prefetched values as its update left them are what its hash holds
-- as text (a Lua number that is no integer might be written with another rounding).
local function own_exact()
  if not (ev_updated and ev_updated_exact) then return false end
  for i = ev_updated_from + 1, ev_updated_from + #ev_prefetch do
    local v = ev_updated[i]
    if v == nil then return false end
    if type(v) == 'number' and (v % 1 ~= 0 or v >= 1e15 or v <= -1e15) then return false end
  end
  return true
end

local single = {}  -- the parts of a person of one profile: one table, refilled for each event
local function find_parts(base)
  -- The owner key named twice: 2 when it exists, plus 1 when the anon key does, in one call.
  local exist = r_call('EXISTS', base .. ':owner', base .. ':anon', base .. ':owner')
  if exist == 0 then single[1] = base; return single end  -- the usual case
  if cluster then return nil end
  -- The profile's owner: the user of its earliest link, unless it is a user's own profile (it
  -- has a user_id field): a user id is a person of its own, whatever links name it; and one
  -- that links name is a linked user (user_linked). No owner means no owner key: not linked.
  local owner = nil
  if exist >= 2 then owner = r_call('ZRANGE', base .. ':owner', 0, 0)[1] end
  local head, encoded = s_match(base, '^(.-{)(.*)}$')
  local person, person_base = decode_id(encoded), base
  if owner then
    if r_call('HEXISTS', base .. ':p', 'user_id') == 1 then return nil end  -- user_linked(base)
    if owner ~= person then
      person, person_base = owner, head .. encode_id(owner) .. '}'
      if user_linked(person_base) then return nil end
    end
  end
  local anonymous = r_call('SMEMBERS', person_base .. ':anon')
  local parts, values, ids = {person_base}, {false}, {person}
  table.sort(anonymous)
  for _, id in ipairs(anonymous) do
    if id ~= person then
      local part = head .. encode_id(id) .. '}'
      local read = part_read(part)
      if read[1] then return nil end  -- a user_id: the part is a user
      -- its owner, without the user_id check: the part has none (just checked)
      if r_call('ZRANGE', part .. ':owner', 0, 0)[1] == person then
        parts[#parts + 1] = part
        values[#parts], ids[#parts] = read, id
      end
    end
  end
  ev_part_values, ev_part_ids = values, ids
  return parts
end

-- The prefetched fields of a person, each part read once: an anonymous part's values as
-- find_parts read them, the event's own as its update left them (when exact), else an HMGET.
-- Sums them into ev_sums in part order, as read_numbers does.
local function read_parts()
  local sums, found, from_of = {}, ev_part_values or {}, {}
  local n = #ev_prefetch
  for p = 1, #ev_parts do
    local values, from = found[p], 1  -- find_parts's read: user_id first
    if not values then
      if ev_parts[p] == ev_base and own_exact() then values, from = ev_updated, ev_updated_from
      else values, from = r_call('HMGET', ev_parts[p] .. ':p', t_unpack(ev_prefetch)), 0 end
      found[p] = values
    end
    from_of[p] = from
    for i = 1, n do
      local x = values[from + i]
      if x then sums[i] = (sums[i] or 0) + to_number(x) end
    end
  end
  for i = 1, n do
    if not sums[i] then sums[i] = false end
  end
  ev_part_values, ev_part_from, ev_sums = found, from_of, sums
end

local function person_parts()
  if ev_parts == false then
    ev_parts = find_parts(ev_base)
    if ev_parts and ev_updated and #ev_parts == 1 and ev_parts[1] == ev_base then
      ev_values = ev_updated  -- the event's own update left them (only its prefetched fields)
    elseif ev_parts and #ev_prefetch > 0 then
      read_parts()
    end
  end
  return ev_parts
end

-- A field of the person's fields hashes added up over its parts; nil when no part has it (or
-- it is not a number). The event's own update leaves its values as stored, text or numbers.
local function number(name)
  local v = nil
  if ev_values then
    local at = ev_prefetch[name]
    if at then v = ev_values[ev_updated_from + at] end  -- false: the field is not there
  end
  if v == nil and ev_sums then
    local at = ev_prefetch[name]
    if at then v = ev_sums[at] end
  end
  if v == nil then
    v = ev_numbers and ev_numbers[name]
    if v == nil then
      read_numbers({name})
      v = ev_numbers[name]
    end
  end
  if v then return to_number(v) end
  return nil
end

-- The number of sessions over all parts: intervals at most the session gap apart merge
-- (merge_sessions in streaming/profiles/identity.py).
local function session_count()
  local intervals = {}
  for _, part in ipairs(ev_parts) do
    for _, member in ipairs(r_call('ZRANGE', part .. ':sessions', 0, -1)) do
      local sep = s_find(member, ':', 1, true)
      intervals[#intervals + 1] = {to_number(s_sub(member, 1, sep - 1)), to_number(s_sub(member, sep + 1))}
    end
    local bounds = r_call('HMGET', part .. ':p', 'ss', 'se')
    if bounds[1] then intervals[#intervals + 1] = {to_number(bounds[1]), to_number(bounds[2])} end
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

-- The profile numbers kept beside the trait registry, as merged_view computes them: the intent
-- score is the first part's that has one (the person's own first). The registry's numbers are
-- plan nodes {'n', stored field, divisor} (streaming/rules/prefilter.py).
local PROFILE_NUMBERS = {
  intent_score = function()
    if #ev_parts == 1 then return number('intent_score') or 0 end
    local at = ev_prefetch['intent_score']
    local own = ev_updated and at  -- the event's own profile: as its update left it
    for p, part in ipairs(ev_parts) do
      local score
      if own and part == ev_base then score = ev_updated[ev_updated_from + own]
      elseif at and ev_sums then score = ev_part_values[p][ev_part_from[p] + at]  -- read with the parts
      else score = r_call('HGET', part .. ':p', 'intent_score') end
      if score then return to_number(score) end
    end
    return 0
  end,
  session_count = function()
    if #ev_parts > 1 then return session_count() end
    return r_call('ZCARD', ev_parts[1] .. ':sessions') + (number('ss') and 1 or 0)
  end,
}

-- How many entries a profile map shows (``positive``: keys above 0 only, the cart), over all parts.
-- HSCAN with MATCH hands Lua only the map's fields, not the whole profile hash.
local function map_size(prefix, positive)
  local name = 'size:' .. prefix
  if not ev_numbers then ev_numbers = {} end
  if ev_numbers[name] == nil then
    local sums, n = {}, 0
    local pattern = string.gsub(prefix, '[%*%?%[%]\\]', '\\%0') .. ':*'
    for _, part in ipairs(ev_parts) do
      local page = r_call('HSCAN', part .. ':p', '0', 'MATCH', pattern, 'COUNT', 1000)
      local flat = page[2]
      if page[1] == '0' then  -- one page, the usual case: no field twice, summed as it comes
        for i = 1, #flat, 2 do sums[flat[i]] = (sums[flat[i]] or 0) + to_number(flat[i + 1]) end
      else
        local values = {}
        while true do  -- a large hash takes several pages, which may repeat a field: each counts once
          for i = 1, #flat, 2 do values[flat[i]] = flat[i + 1] end
          if page[1] == '0' then break end
          page = r_call('HSCAN', part .. ':p', page[1], 'MATCH', pattern, 'COUNT', 1000)
          flat = page[2]
        end
        for field, value in pairs(values) do sums[field] = (sums[field] or 0) + to_number(value) end
      end
    end
    for _, v in pairs(sums) do
      if not positive or v > 0 then n = n + 1 end
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
  elseif op == 'n' then
    local name, divisor = node[2], node[3]
    return function()
      if not person_parts() then return UNKNOWN end
      return (number(name) or 0) / divisor
    end
  elseif op == 'p' then
    local read = PROFILE_NUMBERS[node[2]]
    return function()
      if not person_parts() then return UNKNOWN end
      return read()
    end
  elseif op == 'size' then
    local prefix, positive = node[2], node[3]
    return function()
      if not person_parts() then return UNKNOWN end
      return map_size(prefix, positive)
    end
  elseif op == 'm' or op == 'in' then
    local prefix, key_of, membership, positive = node[2], compile(node[3]), (op == 'in'), node[4]
    return function()
      if not person_parts() then return UNKNOWN end
      local key = key_of()
      if type(key) ~= 'string' then return UNKNOWN end
      local v = number(prefix .. ':' .. key)
      if v ~= nil and positive and v <= 0 then v = nil end  -- e.g. the cart shows positive quantities only
      if membership then return v ~= nil end
      return v or UNKNOWN  -- a missing key is a CEL error
    end
  end
  return function() return UNKNOWN end
end

-- The same three-valued evaluation as straight-line Lua: a condition's plan node becomes the
-- source of one function (loadstring, once per plan and kept with it between calls), so an
-- evaluation is one call instead of a closure call per node. Its statements read the event
-- (argument d) and the person through the helpers compile's closures use. A node it cannot
-- write as a literal (a JSON null, an infinity) or an unknown opcode leaves the closures of
-- compile in place; so does a server without loadstring, or a source that does not load.
local has_loadstring = nil  -- known at the first compile: the library's load step cannot call pcall
local source_of
local function literal(v)
  if type(v) == 'string' then return s_format('%q', v) end
  if type(v) == 'boolean' then return tostring(v) end
  if type(v) == 'number' and v == v and v ~= math.huge and v ~= -math.huge then
    return s_format('%.17g', v)
  end
  return nil
end
-- Appends to ``out`` the statements computing ``node``; returns an expression of its value
-- (a literal or a local's name) valid after them, or nil when the node cannot be written.
source_of = function(node, out, n)
  local op = node[1]
  n[1] = n[1] + 1
  local r = 'v' .. n[1]
  local function add(line) out[#out + 1] = line end
  if op == 'k' then
    return literal(node[2])
  elseif op == '?' then
    return 'U'
  elseif op == 'e' then
    local index = EVENT_FIELDS[node[2]]
    if not index then return 'nil' end
    return 'd[' .. index .. ']'
  elseif op == 'and' or op == 'or' then
    local stop = (op == 'or') and 'true' or 'false'
    local go = (op == 'or') and 'false' or 'true'
    add('local ' .. r)
    local x = source_of(node[2], out, n)
    if not x then return nil end
    add('if ' .. x .. ' == ' .. stop .. ' then ' .. r .. ' = ' .. stop .. ' else')
    local y = source_of(node[3], out, n)
    if not y then return nil end
    add('if ' .. y .. ' == ' .. stop .. ' then ' .. r .. ' = ' .. stop .. ' elseif ' .. x .. ' == ' .. go
      .. ' and ' .. y .. ' == ' .. go .. ' then ' .. r .. ' = ' .. go .. ' else ' .. r .. ' = U end')
    add('end')
    return r
  elseif op == 'not' then
    local x = source_of(node[2], out, n)
    if not x then return nil end
    add('local ' .. r .. ' = U')
    add('if ' .. x .. ' == true then ' .. r .. ' = false elseif ' .. x .. ' == false then ' .. r .. ' = true end')
    return r
  elseif op == 'cmp' then
    local c = node[2]
    local x = source_of(node[3], out, n)
    if not x then return nil end
    local y = source_of(node[4], out, n)
    if not y then return nil end
    add('local ' .. r .. ' = U')
    if c == '==' or c == '!=' then
      local equal = (c == '==') and 'true' or 'false'
      add('if ' .. x .. ' ~= U and ' .. y .. ' ~= U and type(' .. x .. ') == type(' .. y .. ') then '
        .. r .. ' = ((' .. x .. ' == ' .. y .. ') == ' .. equal .. ') end')
    elseif c == '<' or c == '<=' or c == '>' or c == '>=' then
      add('if type(' .. x .. ') == "number" and type(' .. y .. ') == "number" then '
        .. r .. ' = (' .. x .. ' ' .. c .. ' ' .. y .. ') end')
    end
    return r
  elseif op == 'n' then
    local name, divisor = literal(node[2]), literal(node[3])
    if not name or not divisor then return nil end
    add('local ' .. r .. ' = U')
    add('if P() then ' .. r .. ' = (N(' .. name .. ') or 0) / ' .. divisor .. ' end')
    return r
  elseif op == 'p' then
    if not PROFILE_NUMBERS[node[2]] then return nil end
    add('local ' .. r .. ' = U')
    add('if P() then ' .. r .. ' = R[' .. literal(node[2]) .. ']() end')
    return r
  elseif op == 'size' then
    local prefix, positive = literal(node[2]), literal(node[3])
    if not prefix or not positive then return nil end
    add('local ' .. r .. ' = U')
    add('if P() then ' .. r .. ' = S(' .. prefix .. ', ' .. positive .. ') end')
    return r
  elseif op == 'm' or op == 'in' then
    local prefix, positive = literal(node[2]), node[4] and 'true' or 'false'
    if not prefix then return nil end
    add('local ' .. r .. ' = U')
    add('if P() then')
    local key = source_of(node[3], out, n)
    if not key then return nil end
    add('if type(' .. key .. ') == "string" then')
    add('local v = N(' .. prefix .. ' .. ":" .. ' .. key .. ')')
    add('if v ~= nil and ' .. positive .. ' and v <= 0 then v = nil end')
    if op == 'in' then add(r .. ' = (v ~= nil)') else add('if v ~= nil then ' .. r .. ' = v end') end
    add('end')
    add('end')
    return r
  end
  return nil
end

-- The condition's function from straight-line source, or nil (compile's closures then).
local function compile_source(node)
  if has_loadstring == nil then
    -- Valkey raises on a missing global, Redis returns nil: either way, no loadstring
    local ok, found = pcall(function() return loadstring end)
    has_loadstring = ok and type(found) == 'function'
  end
  if not has_loadstring then return nil end
  local out, n = {}, {0}
  local ok, result = pcall(source_of, node, out, n)
  if not ok or not result or n[1] > 150 then return nil end  -- 150: well under Lua's 200 locals
  local text = 'local U, P, N, R, S = ...\nreturn function(d)\n' .. table.concat(out, '\n')
    .. '\nreturn ' .. result .. '\nend\n'
  local chunk = loadstring(text)
  if not chunk then return nil end
  return chunk(UNKNOWN, person_parts, number, PROFILE_NUMBERS, map_size)
end

-- A condition's evaluation: straight-line when it can be written, else closures.
local function compiled(node)
  return compile_source(node) or compile(node)
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
  for p = 1, #ev_parts do
    local state = r_call('HGET', ev_parts[p] .. ':fires', key)
    if state then
      local at, n, event_id = s_match(state, '^(%d+):(%d+):(.*)$')
      if not at then return true, false, 0 end
      at, n = to_number(at), to_number(n)
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
  if not test then test = compiled(cjson.decode(rule[3])); rule.condition = test end  -- on first use
  local condition = test(ev_delta)
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
  for i = 1, #rules do run_one(rules[i], may) end
end

-- A type plan: rules for every event, rules guarded by ``event.<field> == value`` by value,
-- and tiers of rules requiring ``number >= c`` in ascending c: those above the number are skipped.
local function run_type_plan(type_plan, may)
  if not type_plan then return end
  run(type_plan['all'], may)
  local by = type_plan.by_list  -- set by plan_of: most type plans guard no rule by a value
  for i = 1, #by, 2 do
    local group = by[i + 1][ev_delta[by[i]]]
    if group then run(group['rules'], may) end
  end
  local tiers = type_plan['tiers']
  for t = 1, #tiers do
    local tier = tiers[t]
    if not tier.number then tier.number = compiled(cjson.decode(tier[1])) end
    local value = tier.number(ev_delta)
    local known = type(value) == 'number'
    local entries = tier[2]
    for e = 1, #entries do
      local entry = entries[e]
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
    if not names[name] then names[#names + 1] = name; names[name] = #names end
  end
  for _, pair in ipairs(reads['keyed']) do
    local name = pair[1] .. ':' .. d[EVENT_FIELDS[pair[2]]]
    if not names[name] then names[#names + 1] = name; names[name] = #names end
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
-- (kept with the plan, by event type and category): a list, which also maps each name to its
-- position in it.
local function prefetch_names(d)
  local by_category = plan.prefetched[d[3]]
  local names = by_category and by_category[d[7]]
  if names then return names end
  names = {}
  local typed = add_fields(plan['types'][d[3]], d, names)
  if (not plan.any_rules or add_fields(plan['any'], d, names)) and typed then
    if not by_category then by_category = {}; plan.prefetched[d[3]] = by_category end
    by_category[d[7]] = names
  end
  return names
end

-- The person id and user id a decision names (merged_view's profile_id and user_id). An event
-- with a user id is keyed by it: when its own profile heads the person, both are that id.
local function person_ids()
  if ev_delta[5] ~= '' and ev_parts[1] == ev_base then return ev_delta[5], ev_delta[5] end
  local person = ev_part_ids and ev_part_ids[1] or decode_id(s_match(ev_parts[1], '{(.*)}$'))
  local user_id = r_call('HGET', ev_parts[1] .. ':p', 'user_id')
  if not user_id and #ev_parts > 1 then user_id = person end
  return person, user_id or ''
end

-- Evaluates the rules of a delta's event type; an event with candidates adds
-- {event_id, {rule, certain, count, ...}, person id, user id} (ids '' when not read) to the
-- reply. Its profile is reported only when a candidate is uncertain (Python evaluates those).
-- ``names`` are the fields its rules read (prefetch_names) and ``updated[from + i]`` the value
-- of names[i] after the event's own update (``updated`` nil in a decide call); ``exact`` when
-- no cell was trimmed after that read (the values are then what the hash holds).
local function prefilter(d, base, names, updated, from, exact)
  local typed = plan['types'][d[3]]
  ev_delta, ev_base, ev_parts, ev_numbers, ev_prefetch = d, base, false, nil, names
  ev_updated, ev_updated_from, ev_values = updated, from, nil
  ev_updated_exact, ev_part_values, ev_part_from, ev_sums, ev_part_ids = exact, nil, nil, nil, nil
  ev_uncertain = false
  local may = spare_may
  run_type_plan(typed, may)
  if plan.any_rules then run_type_plan(plan['any'], may) end  -- rules without ``on``: usually none
  if #may > 0 then
    spare_may = {}
    local person, user_id = '', ''
    if ev_parts then person, user_id = person_ids() end
    candidates[#candidates + 1] = {d[2], may, person, user_id}
    if ev_uncertain then candidate_profiles[d[1]] = true end
  end
  if stitched_wanted and ev_parts and (#ev_parts > 1 or ev_parts[1] ~= base) then  -- a person of other profiles
    local ids = {}
    if ev_part_ids then ids = ev_part_ids
    else for i, part in ipairs(ev_parts) do ids[i] = decode_id(s_match(part, '{(.*)}$')) end end
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
  found.prefetched = {}  -- by event type, then category
  found.any_rules = #any['all'] > 0 or next(any['by']) ~= nil or #any['tiers'] > 0
  -- by_list: the ``by`` groups as {event field's index in a delta, groups by value, ...}
  local function list_by(type_plan)
    local list = {}
    for name, by_value in pairs(type_plan['by']) do
      local index = EVENT_FIELDS[name]  -- a guard on another field never matches a delta's value
      if index then list[#list + 1] = index; list[#list + 1] = by_value end
    end
    type_plan.by_list = list
  end
  list_by(any)
  for _, type_plan in pairs(found['types']) do list_by(type_plan) end
  plans[argument], plans_kept = found, plans_kept + 1
  return found
end
