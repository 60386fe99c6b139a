-- One key's token bucket (streaming/api/rate_limit.py). KEYS[1]: the bucket hash.
-- ARGV: rate (tokens per second), burst (bucket size), cost. Returns 1 and takes the tokens
-- when the bucket holds enough, else 0 and takes nothing. Time is the server's, so every API
-- process shares one clock.
if redis.replicate_commands then redis.replicate_commands() end  -- Redis < 7: allow TIME before writes
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
local allowed = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'at', now)
-- An idle bucket refills to full; keep it only as long as that takes.
if rate > 0 then
  redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
end
return allowed
