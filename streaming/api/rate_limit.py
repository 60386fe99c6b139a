"""Per-key token buckets counting events, in process.

Each API process (uvicorn worker, replica) has its own buckets, so the limit a key gets from
a deployment is the setting times the number of processes (docs/security.md). Buckets are
keyed by the key's SHA-256 digest, so the limiter keeps no key in memory.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Allow ``rate`` events/s per key on average, with bursts up to ``burst`` events."""

    def __init__(self, rate: float, burst: float, clock=time.monotonic) -> None:
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._buckets: dict[bytes, _Bucket] = {}

    def allow(self, key: str, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens from the key's bucket; False (and take nothing) when short."""
        now = self._clock()
        bucket_id = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
        bucket = self._buckets.get(bucket_id)
        if bucket is None:
            bucket = self._buckets[bucket_id] = _Bucket(self._burst, now)
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated) * self._rate)
        bucket.updated = now
        if bucket.tokens < cost:
            return False
        bucket.tokens -= cost
        return True
