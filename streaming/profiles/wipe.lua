-- Wipe profile parts for a rebuild (streaming/profiles/rebuild_wipe.py), atomically between the
-- stream's updates: each part's state keys and event_id markers, so re-applying its archived
-- events counts every event the stream applied before this call and dedupes every one after it.
-- KEYS:  five per part, all under the part's hash tag (one slot; a cluster call holds one part):
--        fields hash, anonymous ids, products, sessions, kept-fields hash ("<base>:rebuild").
-- ARGV:  1 msgpack array, per part {version, {marker keys}}: the part's version when its
--          "<base>:seen:<event_id>" markers were looked for with SCAN, "<event_count>:<updated_at>".
--          Every update the stream applies changes both, so an unchanged version means no marker
--          was made since, and the keys given are all of them.
--        2 '' or a SCAN MATCH pattern: then the markers are found here instead (a walk of this
--          server's whole keyspace that blocks it: the last resort for parts the stream keeps
--          updating) and versions are not checked.
-- Returns per part -1 (nothing done: its version changed) or the number of markers deleted.
-- Kept: "segments" (the rules' own) and "bf:<trait>" (trait backfills done) go to the kept-fields
-- hash (a value kept by an earlier, unfinished rebuild wins); restore.lua puts them back. That
-- hash exists from the wipe to the restore (field "rebuilding"): trait backfills skip the part.
local parts = cmsgpack.unpack(ARGV[1])
local scan = ARGV[2] ~= ''
local found = {}  -- part index -> marker keys found by the SCAN below
if scan then
  local index = {}
  for i = 1, #parts do index[string.sub(KEYS[5 * i - 4], 1, -3)] = i; found[i] = {} end
  local cursor = '0'
  repeat
    local page = redis.call('SCAN', cursor, 'MATCH', ARGV[2], 'COUNT', 1000)
    cursor = page[1]
    for _, key in ipairs(page[2]) do
      local at = string.find(key, ':seen:', 1, true)
      local i = at and index[string.sub(key, 1, at - 1)]
      if i then table.insert(found[i], key) end
    end
  until cursor == '0'
end

local results = {}
for i, part in ipairs(parts) do
  local fields, kept = KEYS[5 * i - 4], KEYS[5 * i]
  local cur = redis.call('HMGET', fields, 'event_count', 'updated_at')
  if not scan and (cur[1] or '') .. ':' .. (cur[2] or '') ~= part[1] then
    results[i] = -1
  else
    redis.call('HSET', kept, 'rebuilding', '1')
    local all = redis.call('HGETALL', fields)
    for j = 1, #all, 2 do
      local name = all[j]
      if name == 'segments' or string.sub(name, 1, 3) == 'bf:' then redis.call('HSETNX', kept, name, all[j + 1]) end
    end
    local markers = scan and found[i] or part[2]
    local deleted = 0
    for j = 1, #markers, 1000 do
      deleted = deleted + redis.call('DEL', unpack(markers, j, math.min(j + 999, #markers)))
    end
    redis.call('DEL', fields, KEYS[5 * i - 3], KEYS[5 * i - 2], KEYS[5 * i - 1])
    results[i] = deleted
  end
end
return results
