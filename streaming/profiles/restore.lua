-- After a rebuild re-applied a part's events (streaming/profiles/rebuild_wipe.py): put the fields
-- wipe.lua kept back on the part if it has events again (HSETNX: a value the stream wrote since
-- wins), then drop them, with the "rebuilding" mark trait backfills heed.
-- KEYS: 1 fields hash, 2 kept-fields hash. Returns the number of fields put back.
local restored = 0
if redis.call('EXISTS', KEYS[1]) == 1 then
  local kept = redis.call('HGETALL', KEYS[2])
  for i = 1, #kept, 2 do
    if kept[i] ~= 'rebuilding' then restored = restored + redis.call('HSETNX', KEYS[1], kept[i], kept[i + 1]) end
  end
end
redis.call('DEL', KEYS[2])
return restored
