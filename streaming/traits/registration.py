"""Trait-set generations: which events a live trait already counted, so a backfill counts the rest.

Each trait set an app starts computing with is *registered* first, in one atomic Redis call:
it gets the next generation number, and every trait in it that was never live before records
that generation (and the server time) as the one it went live with. The profile app marks
each event it applies with its trait set's generation (the dedupe marker's value ``g<n>``), so
for any applied event and any trait, ``n >= live generation`` means the trait counted it. A
trait removed and declared again keeps its first live generation: give it a new name (or change
its definition) instead. See docs/traits.md, "Backfill".
"""

from __future__ import annotations

import logging
from typing import NamedTuple

from core.redis_client import RedisClient
from streaming.traits.follower import TraitsFollower
from streaming.traits.registry import TraitSet

logger = logging.getLogger(__name__)

GENERATION_KEY = "pulse:{traits}:generation"
LIVE_KEY = "pulse:{traits}:live"  # storage id -> "<generation>:<server ms>"
BACKFILLED_KEY = "pulse:{traits}:backfilled"  # storage id -> server ms of the completed backfill

_REGISTER = """
local generation = redis.call('INCR', KEYS[1])
local t = redis.call('TIME')
local stamp = generation .. ':' .. (t[1] * 1000 + math.floor(t[2] / 1000))
for i = 1, #ARGV do
  if redis.call('HEXISTS', KEYS[2], ARGV[i]) == 0 then redis.call('HSET', KEYS[2], ARGV[i], stamp) end
end
return generation
"""


class LiveSince(NamedTuple):
    generation: int
    at_ms: int


def register(client: RedisClient, traits: TraitSet) -> int:
    """Register a trait set before any event is computed with it; return its generation."""
    storage_ids = [trait.storage_id for trait in traits.cell_traits]
    return int(client.eval(_REGISTER, 2, GENERATION_KEY, LIVE_KEY, *storage_ids))


def live_since(client: RedisClient) -> dict[str, LiveSince]:
    """Storage id -> the generation (and time) each trait went live with."""
    found = {}
    for sid, stamp in client.hgetall(LIVE_KEY).items():
        generation, at = (stamp.decode() if isinstance(stamp, bytes) else stamp).split(":")
        found[sid.decode() if isinstance(sid, bytes) else sid] = LiveSince(int(generation), int(at))
    return found


def backfilled(client: RedisClient) -> set[str]:
    """Storage ids of the traits whose backfill has completed."""
    return {k.decode() if isinstance(k, bytes) else k for k in client.hkeys(BACKFILLED_KEY)}


class RegisteredTraits:
    """The follower's current traits, each new set registered (and given its generation) before use."""

    def __init__(self, client: RedisClient, follower: TraitsFollower) -> None:
        self._client = client
        self._follower = follower
        self._source: TraitSet | None = None
        self._current: TraitSet | None = None

    def current(self) -> TraitSet:
        traits = self._follower.current()
        if traits is not self._source:
            generation = register(self._client, traits)
            traits.generation = generation
            logger.info("traits generation %d: %d user traits", generation, len(traits))
            self._source, self._current = traits, traits
        return self._current  # type: ignore[return-value]
