"""Helpers for end-to-end tests: ground truth from acknowledged events, waiting for convergence."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import httpx
import msgspec
import redis

from assets.reconciliation import IGNORED_FIELDS
from enrichment.catalog import SAMPLE_CATALOG, Catalog, categories_from_rows, read_catalog_csv
from enrichment.reference_store import CATALOG, publish_reference
from streaming.profiles.store import RedisProfileStore
from streaming.traits.follower import TraitsFollower
from streaming.traits.registry import TraitSet
from tests.reference_recompute import recompute_profiles

#: The traits the apps run with in these tests (the shipped file, the default).
SHIPPED_TRAITS = TraitsFollower(None).prime()
#: One instant every comparison reads windows and decayed values at, on both sides.
AS_OF = int(time.time() * 1000)


def comparable(document: dict[str, Any]) -> dict[str, Any]:
    """A profile without the fields reconciliation ignores (processing time, model score, rule segments)."""
    return {k: v for k, v in document.items() if k not in IGNORED_FIELDS}


def ground_truth(
    acknowledged: Iterable[Mapping[str, Any]],
    catalog: Catalog,
    session_gap_ms: int,
    traits: TraitSet = SHIPPED_TRAITS,
) -> dict[str, dict]:
    """Profiles (without derived fields) that the acknowledged valid events must produce."""
    documents = recompute_profiles(
        (msgspec.json.encode(obj) for obj in acknowledged),
        catalog,
        session_gap_ms,
        traits=traits,
        now_ms=AS_OF,
    )
    return {pid: comparable(doc) for pid, doc in documents.items()}


def live_profiles(store: RedisProfileStore, ids: Iterable[str]) -> dict[str, dict | None]:
    docs = {}
    for pid, doc in store.get_profiles(list(ids), AS_OF).items():
        if doc is not None:
            assert doc["updated_at"] is not None
            doc = comparable(doc)
        docs[pid] = doc
    return docs


def wait_for_profiles(
    store: RedisProfileStore, expected: dict[str, dict], timeout: float
) -> dict[str, dict | None]:
    """Poll Redis until the live profiles equal ``expected`` or the timeout passes; return the last read."""
    deadline = time.monotonic() + timeout
    while True:
        live = live_profiles(store, expected)
        if live == expected or time.monotonic() > deadline:
            return live
        time.sleep(0.25)


def post_batches(base_url: str, key: str, events: list[dict], batch_size: int = 200) -> list[dict]:
    """POST events in batches (retrying 429/503 like a client SDK); return the acknowledged ones."""
    acknowledged: list[dict] = []
    with httpx.Client(base_url=base_url, headers={"X-Pulse-Key": key}, timeout=30) as client:
        for start in range(0, len(events), batch_size):
            batch = events[start : start + batch_size]
            for attempt in range(20):
                response = client.post("/v1/events", json={"events": batch})
                if response.status_code == 202:
                    acknowledged.extend(batch)
                    break
                assert response.status_code in (429, 503), response.text
                time.sleep(0.1 * (attempt + 1))
            else:
                raise AssertionError("collector kept refusing a batch")
    return acknowledged


def store_for(url: str, session_gap_ms: int) -> RedisProfileStore:
    return RedisProfileStore(
        redis.Redis.from_url(url),
        dedupe_window_seconds=3600,
        session_gap_ms=session_gap_ms,
        traits=lambda: SHIPPED_TRAITS,
    )


def eventually(check: Callable[[], bool], timeout: float, interval: float = 0.25) -> bool:
    """Poll ``check`` until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return False


def publish_sample_catalog(client: redis.Redis) -> Catalog:
    """Publish the sample product catalog as the reference the apps read; the catalog."""
    rows = read_catalog_csv(SAMPLE_CATALOG)
    return Catalog(publish_reference(client, CATALOG, rows, "product_id"), categories_from_rows(rows))


def start_platform(pulse_apps: Callable[[str], Any], settings: Any) -> str:
    """Start the profile app, the archiver and the API (`pulse_apps` fixture); the API's base URL."""
    for app in ("profile-app", "archiver", "api"):
        pulse_apps(app)
    return f"http://{settings.api_host}:{settings.api_port}"
