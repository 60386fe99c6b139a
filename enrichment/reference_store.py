"""Versioned reference data in Redis (I/O): publish beside the old version, switch a pointer.

Layout: ``pulse:ref:<dataset>:<version>`` is a hash of id -> JSON row;
``pulse:ref:<dataset>:current`` names the live version. Readers follow the pointer, so a
new version becomes visible all at once and the profile app needs no restart.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol, TypeVar

import redis

from core.follower import Follower
from enrichment.campaigns import CampaignIndex, campaign_key
from enrichment.catalog import Catalog
from enrichment.geo import GeoIndex

logger = logging.getLogger(__name__)

CATALOG = "catalog"
GEO = "geo"
CAMPAIGNS = "campaigns"
#: How each dataset's rows are keyed in its version hash.
ROW_IDS: dict[str, Callable[[Mapping[str, str]], str]] = {
    CATALOG: lambda row: row["product_id"],
    GEO: lambda row: row["start_ip"],
    CAMPAIGNS: lambda row: campaign_key(row["utm_source"], row["utm_medium"], row["utm_campaign"]),
}


class Versioned(Protocol):
    """A loaded dataset: immutable, named by the version it was read from."""

    @property
    def version(self) -> str: ...


T = TypeVar("T", bound=Versioned)


def _pointer(dataset: str) -> str:
    return f"pulse:ref:{dataset}:current"


def _version_key(dataset: str, version: str) -> str:
    return f"pulse:ref:{dataset}:{version}"


def publish_reference(
    client: redis.Redis,
    dataset: str,
    rows: Iterable[Mapping[str, str]],
    id_field: str | Callable[[Mapping[str, str]], str],
    keep: int = 2,
) -> str:
    """Write a new version of a dataset, switch the pointer to it, drop versions beyond ``keep``.

    ``id_field`` names the column that keys a row, or computes the key from the row.
    """
    version = f"v{time.time_ns()}"
    key = _version_key(dataset, version)
    row_id = id_field if callable(id_field) else (lambda row: row[id_field])
    mapping = {row_id(row): json.dumps(dict(row)) for row in rows}
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


def load_rows(
    client: redis.Redis, dataset: str, attempts: int = 3
) -> tuple[str | None, list[dict[str, str]]]:
    """(live version, its rows); (None, []) when nothing is published.

    A version can be dropped between reading the pointer and reading the hash (two newer
    publishes in between): then the pointer is read again, so a reader never takes an
    empty hash for a dataset.
    """
    for _ in range(attempts):
        version = current_version(client, dataset)
        if version is None:
            return None, []
        raw = client.hgetall(_version_key(dataset, version))
        if raw:
            return version, [json.loads(row) for row in raw.values()]
    raise redis.RedisError(
        f"{dataset} version {version} vanished while being read {attempts} times; retry later"
    )


def load_catalog(client: redis.Redis) -> Catalog:
    """The live catalog version (empty when none is published)."""
    version, rows = load_rows(client, CATALOG)
    if version is None:
        return Catalog()
    return Catalog(
        version,
        {row["product_id"]: row["category"] for row in rows if row.get("product_id") and row.get("category")},
    )


def load_geo(client: redis.Redis) -> GeoIndex:
    """The live geo ranges (empty when none are published)."""
    version, rows = load_rows(client, GEO)
    return GeoIndex() if version is None else GeoIndex.from_rows(rows, version)


def load_campaigns(client: redis.Redis) -> CampaignIndex:
    """The live campaigns (empty when none are published)."""
    version, rows = load_rows(client, CAMPAIGNS)
    return CampaignIndex() if version is None else CampaignIndex.from_rows(rows, version)


class ReferenceFollower(Follower[T]):
    """Keeps the live version of a dataset in memory, checking the pointer at most every ``refresh_seconds``.

    The swap is a single assignment of an immutable object, so a reader sees the old
    version or the new one, never a mixture; a Redis error keeps the version it has.
    ``prime()`` reads before an app's first event: one that started without it would enrich its
    first events with nothing if Redis went down before its first ``current()``, and for
    ``refresh_seconds`` after Redis came back (events applied without their categories).
    """

    keep_on = (redis.RedisError,)

    def __init__(
        self,
        client: redis.Redis,
        dataset: str,
        load: Callable[[redis.Redis], T],
        empty: T,
        refresh_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        size: Callable[[T], int] = len,  # type: ignore[assignment]
    ) -> None:
        super().__init__(empty, refresh_seconds, clock)
        self._client = client
        self._dataset = dataset
        self._load = load
        self._size = size

    def read(self, value: T) -> T:
        version = current_version(self._client, self._dataset)
        if version is None or version == value.version:  # type: ignore[attr-defined]
            return value
        loaded = self._load(self._client)
        logger.info("%s %s loaded (%d rows)", self._dataset, loaded.version, self._size(loaded))  # type: ignore[attr-defined]
        return loaded


class CatalogFollower(ReferenceFollower[Catalog]):
    """Follows the live product catalog."""

    def __init__(
        self, client: redis.Redis, refresh_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(
            client,
            CATALOG,
            load_catalog,
            Catalog(),
            refresh_seconds,
            clock,
            size=lambda catalog: len(catalog.categories),
        )


class GeoFollower(ReferenceFollower[GeoIndex]):
    """Follows the live geo ranges."""

    def __init__(
        self, client: redis.Redis, refresh_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(client, GEO, load_geo, GeoIndex(), refresh_seconds, clock)


class CampaignFollower(ReferenceFollower[CampaignIndex]):
    """Follows the live campaigns."""

    def __init__(
        self, client: redis.Redis, refresh_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(client, CAMPAIGNS, load_campaigns, CampaignIndex(), refresh_seconds, clock)
