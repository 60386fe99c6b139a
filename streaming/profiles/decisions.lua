-- What GET /v1/decisions needs of one person, in one call (standalone Redis only: the keys of
-- a person's ids are in different cluster slots, so a cluster reads them in pipelines).
--
-- ARGV[1]: the requested id (a user id or an anonymous id). Reads the decision part of that id,
-- of its owner when another user owns it (never when the id is a user id itself: it has a
-- user_id field), and of every anonymous id of that person. Each part
-- is {id, owner or nil, event_count, user_id, intent_score, segments, {anonymous ids},
-- {decision key, decision json, ...}}, as RedisProfileStore._decision_part decodes it.
-- Key layout: streaming/profiles/keys.py (ids percent-encode '%', '{' and '}').

local function base(id)
  local encoded = string.gsub(id, '[%%{}]', {['%'] = '%25', ['{'] = '%7B', ['}'] = '%7D'})
  return 'pulse:{' .. encoded .. '}'
end

local function part(id)
  local b = base(id)
  local owner = redis.call('ZRANGE', b .. ':owner', 0, 0)[1] or false
  local fields = redis.call('HMGET', b .. ':p', 'event_count', 'user_id', 'intent_score', 'segments')
  return {id, owner, fields[1], fields[2], fields[3], fields[4],
          redis.call('SMEMBERS', b .. ':anon'), redis.call('HGETALL', b .. ':decisions')}
end

local requested = part(ARGV[1])
local parts = {requested}
local person, own = ARGV[1], requested
if requested[2] and requested[2] ~= ARGV[1] and not requested[4] then  -- a user is nobody's part
  person = requested[2]
  own = part(person)
  parts[#parts + 1] = own
end
for _, anonymous_id in ipairs(own[7]) do
  if anonymous_id ~= person and anonymous_id ~= ARGV[1] then
    parts[#parts + 1] = part(anonymous_id)
  end
end
return parts
