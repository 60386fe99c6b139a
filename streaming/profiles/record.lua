-- Store fired decisions in one call (one server; a cluster pipelines HSETs by key instead).
-- KEYS: for each decision its person's decisions hash then fires hash; then, for each person
--       whose segments changed, that person's fields hash.
-- ARGV: 1 msgpack array of {rule key, fire state}, one per decision, in KEYS order; 2 msgpack
--       array of segment lists (comma-joined), one per trailing key; 3... each decision's JSON.
local decisions = cmsgpack.unpack(ARGV[1])
for i, d in ipairs(decisions) do
  redis.call('HSET', KEYS[2 * i - 1], d[1], ARGV[2 + i])
  redis.call('HSET', KEYS[2 * i], d[1], d[2])
end
local offset = 2 * #decisions
for i, segments in ipairs(cmsgpack.unpack(ARGV[2])) do
  redis.call('HSET', KEYS[offset + i], 'segments', segments)
end
return #decisions
