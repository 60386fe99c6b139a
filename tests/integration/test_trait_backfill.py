"""A new trait backfilled from the archive while traffic flows ends exact (real processes).

The profile app, the archiver and the API run; a trait is added to the file while events keep
arriving (client retries of old events among them); `pulse traits backfill` runs in the middle
of it. Afterwards every profile equals the recompute of all acknowledged events with the new
trait, reconciliation is clean, and a second backfill adds nothing.
"""

from __future__ import annotations

import threading
import time

import pytest

from assets.batch_runs import reconcile
from assets.trait_backfill import backfill_traits
from enrichment.catalog import SAMPLE_CATALOG, Catalog, categories_from_rows, read_catalog_csv
from enrichment.reference_store import CATALOG, publish_reference
from orchestration.demo_traffic import TrafficGenerator
from streaming.profiles.store import RedisProfileStore
from streaming.traits.loader import load_traits
from streaming.traits.registration import live_since
from tests.integration.helpers import AS_OF, comparable, ground_truth, post_batches, wait_for_profiles

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BEFORE = """
traits:
  views: {kind: count, on: [page_view]}
"""
ADDED = """
  spend:        {kind: sum, on: [purchase], field: metadata.price}
  biggest:      {kind: max, on: [purchase, add_to_cart], field: metadata.price}
  shoe_views:   {kind: count, on: [page_view], where: 'event.category == "shoes"', window: 30d}
  first_search: {kind: first, on: [search], field: metadata.query}
"""


def test_a_trait_added_under_traffic_is_exact_after_a_backfill(settings, pulse_apps, redis_client, tmp_path):
    rows = read_catalog_csv(SAMPLE_CATALOG)
    publish_reference(redis_client, CATALOG, rows, "product_id")
    catalog = Catalog("v", categories_from_rows(rows))
    traits_file = tmp_path / "traits.yaml"
    traits_file.write_text(BEFORE)
    settings.traits_file, settings.traits_refresh_seconds = traits_file, 0.2
    pulse_apps("profile-app")
    pulse_apps("archiver")
    pulse_apps("api")
    base = f"http://{settings.api_host}:{settings.api_port}"
    gap = settings.session_timeout_seconds * 1000
    generator = TrafficGenerator(catalog.categories, users=40, seed=8)
    first = post_batches(base, "test-write", list(generator.events(1500)), batch_size=100)
    before = load_traits(traits_file)
    store = RedisProfileStore(
        redis_client, dedupe_window_seconds=3600, session_gap_ms=gap, traits=lambda: before
    )
    expected = ground_truth(first, catalog, gap, traits=before)
    assert wait_for_profiles(store, expected, timeout=90) == expected  # applied without the new traits

    # More traffic while the trait goes live and the backfill runs: new events, client retries of old ones.
    traits_file.write_text(BEFORE + ADDED)
    final = load_traits(traits_file)
    retries = first[::7]
    sent: list[dict] = []
    stop = threading.Event()

    def send_until_stopped() -> None:  # traffic flows until the backfill has finished
        while not stop.is_set():
            batch = list(generator.events(200))
            if retries:
                batch += [retries.pop() for _ in range(min(30, len(retries)))]
            sent.extend(post_batches(base, "test-write", batch, batch_size=20))
        sent.extend(post_batches(base, "test-write", retries, batch_size=20))

    sender = threading.Thread(target=send_until_stopped)
    sender.start()
    added = {t.storage_id for t in final.computed if t.name != "views"}
    deadline = time.monotonic() + 60
    while not added <= set(live_since(redis_client)):  # the app loads a file when events flow
        assert time.monotonic() < deadline, "the profile app did not load the new traits"
        time.sleep(0.1)
    try:
        report = backfill_traits(settings)
    finally:
        stop.set()
        sender.join()
    assert len(sent) > 200, "no traffic ran during the backfill"
    assert sorted(report.traits) == ["biggest", "first_search", "shoe_views", "spend", "views"]
    assert report.profiles > 0 and report.ops_applied > 0, report

    expected = ground_truth(first + sent, catalog, gap, traits=final)
    store = RedisProfileStore(
        redis_client, dedupe_window_seconds=3600, session_gap_ms=gap, traits=lambda: final
    )
    live = wait_for_profiles(store, expected, timeout=90)
    differing = {pid: (live[pid], doc) for pid, doc in expected.items() if live[pid] != doc}
    assert not differing, next(iter(differing.items()))
    assert any(doc["computed"].get("spend") for doc in expected.values())

    # A second run adds nothing; reconciliation agrees, trait by trait.
    again = backfill_traits(settings, ["spend", "biggest", "shoe_views", "first_search"])
    assert again.ops_applied == 0, again
    assert {
        pid: comparable(doc) for pid, doc in store.get_profiles(list(expected), AS_OF).items()
    } == expected
    drift = reconcile(settings)
    assert not drift.drifted, drift.as_dict()
