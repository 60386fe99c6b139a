"""Per-key token buckets counting events: in Redis, shared by every API process, or in process.

``SharedRateLimiter`` keeps one bucket per key in Redis (``pulse:ratelimit:<sha256>``), so the
limit holds for a key across uvicorn workers and replicas. Ingestion must not depend on Redis:
while Redis does not answer (a short socket timeout), each process counts alone with its own
``RateLimiter`` and tries Redis again after ``retry_seconds``. Buckets are keyed by the key's
SHA-256 digest, so neither limiter keeps a key, in memory or in Redis.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from importlib import resources

import redis

from core.redis_client import RedisClient

logger = logging.getLogger(__name__)

BUCKET_PREFIX = "pulse:ratelimit:"
_TOKEN_BUCKET_SCRIPT = resources.files("streaming.api").joinpath("token_bucket.lua").read_text()


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Allow ``rate`` events/s per key on average, with bursts up to ``burst`` events (this process only)."""

    def __init__(self, rate: float, burst: float, clock=time.monotonic) -> None:
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._buckets: dict[bytes, _Bucket] = {}

    def allow(self, key: str, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens from the key's bucket; False (and take nothing) when short."""
        now = self._clock()
        bucket_id = _digest(key)
        bucket = self._buckets.get(bucket_id)
        if bucket is None:
            bucket = self._buckets[bucket_id] = _Bucket(self._burst, now)
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated) * self._rate)
        bucket.updated = now
        if bucket.tokens < cost:
            return False
        bucket.tokens -= cost
        return True


class SharedRateLimiter:
    """The same buckets in Redis (one script call per request); ``fallback`` while Redis is unreachable."""

    def __init__(
        self,
        client: RedisClient,
        rate: float,
        burst: float,
        *,
        retry_seconds: float = 5.0,
        clock=time.monotonic,
    ) -> None:
        self._script = client.register_script(_TOKEN_BUCKET_SCRIPT)
        self._rate = rate
        self._burst = burst
        self._fallback = RateLimiter(rate, burst, clock)
        self._retry_seconds = retry_seconds
        self._clock = clock
        self._redis_again_at = 0.0

    def allow(self, key: str, cost: float = 1.0) -> bool:
        if self._clock() < self._redis_again_at:
            return self._fallback.allow(key, cost)
        try:
            return (
                self._script(keys=[BUCKET_PREFIX + _digest(key).hex()], args=[self._rate, self._burst, cost])
                == 1
            )
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self._redis_again_at = self._clock() + self._retry_seconds
            logger.warning(
                "rate limits: Redis unavailable (%s); this process counts alone for %.0f s",
                type(exc).__name__,
                self._retry_seconds,
            )
            return self._fallback.allow(key, cost)
