"""Versioned reference data in Redis (I/O): publish beside the old version, switch a pointer.

Layout: ``pulse:ref:<dataset>:<version>`` is a hash of id -> JSON row;
``pulse:ref:<dataset>:current`` names the live version. Readers follow the pointer, so a
new version becomes visible all at once and the profile app needs no restart.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping

import redis

from enrichment.catalog import Catalog

logger = logging.getLogger(__name__)

CATALOG = "catalog"


def _pointer(dataset: str) -> str:
    return f"pulse:ref:{dataset}:current"


def _version_key(dataset: str, version: str) -> str:
    return f"pulse:ref:{dataset}:{version}"


def publish_reference(client: redis.Redis, dataset: str, rows: Iterable[Mapping[str, str]], id_field: str, keep: int = 2) -> str:
    """Write a new version of a dataset, switch the pointer to it, drop versions beyond ``keep``."""
    version = f"v{time.time_ns()}"
    key = _version_key(dataset, version)
    mapping = {row[id_field]: json.dumps(dict(row)) for row in rows}
    if not mapping:
        raise ValueError(f"refusing to publish an empty {dataset}")
    pipe = client.pipeline(transaction=False)
    items = list(mapping.items())
    for start in range(0, len(items), 1000):
        pipe.hset(key, mapping=dict(items[start : start + 1000]))
    pipe.execute()
    client.set(_pointer(dataset), version)
    client.rpush(f"pulse:ref:{dataset}:versions", version)
    old = client.lrange(f"pulse:ref:{dataset}:versions", 0, -keep - 1)
    if old:
        client.delete(*[_version_key(dataset, v.decode() if isinstance(v, bytes) else v) for v in old])
        client.ltrim(f"pulse:ref:{dataset}:versions", -keep, -1)
    logger.info("published %s %s (%d rows)", dataset, version, len(mapping))
    return version


def current_version(client: redis.Redis, dataset: str) -> str | None:
    value = client.get(_pointer(dataset))
    return value.decode() if isinstance(value, bytes) else value


def load_catalog(client: redis.Redis) -> Catalog:
    """The live catalog version (empty when none is published)."""
    version = current_version(client, CATALOG)
    if version is None:
        return Catalog()
    raw = client.hgetall(_version_key(CATALOG, version))
    categories = {}
    for product_id, row in raw.items():
        pid = product_id.decode() if isinstance(product_id, bytes) else product_id
        category = json.loads(row).get("category")
        if category:
            categories[pid] = category
    return Catalog(version, categories)


class CatalogFollower:
    """Keeps the live catalog in memory, checking the pointer at most every ``refresh_seconds``."""

    def __init__(self, client: redis.Redis, refresh_seconds: float, clock=time.monotonic) -> None:
        self._client = client
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._catalog = Catalog()
        self._checked_at = float("-inf")

    def current(self) -> Catalog:
        now = self._clock()
        if now - self._checked_at >= self._refresh_seconds:
            self._checked_at = now
            try:
                version = current_version(self._client, CATALOG)
                if version != self._catalog.version and version is not None:
                    self._catalog = load_catalog(self._client)
                    logger.info("catalog %s loaded (%d products)", self._catalog.version, len(self._catalog.categories))
            except redis.RedisError as exc:
                logger.warning("catalog refresh failed, keeping %s: %s", self._catalog.version or "none", exc)
        return self._catalog
