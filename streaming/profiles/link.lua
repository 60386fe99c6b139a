-- Link an anonymous id to a user (identity stitching), idempotently.
-- KEYS: 1 the id's owners zset ("<base>:owner"), 2 its fields hash ("<base>:p"), one slot.
-- ARGV: 1 the link's event time (ms), 2 the user id.
-- LT keeps each user's earliest link time. A fields hash that exists is marked ln=1 (its
-- person may have other parts) so the update script's rules prefilter need not look for
-- identity keys on every event; update.lua marks hashes it creates itself.
redis.call('ZADD', KEYS[1], 'LT', ARGV[1], ARGV[2])
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('HSET', KEYS[2], 'ln', '1') end
return 1
