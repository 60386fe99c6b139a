"""Reconciliation on a live system: cut at the stream's commits, clean under traffic, drift still found."""

from __future__ import annotations

import threading

import pytest

from assets.batch_runs import reconcile
from orchestration.demo_traffic import TrafficGenerator
from streaming.profiles.keys import profile_keys
from tests.integration.helpers import (
    ground_truth,
    post_batches,
    publish_sample_catalog,
    start_platform,
    store_for,
    wait_for_profiles,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_reconcile_during_traffic_is_clean_and_still_finds_drift(settings, pulse_apps, redis_client):
    catalog = publish_sample_catalog(redis_client)
    base = start_platform(pulse_apps, settings)
    generator = TrafficGenerator(catalog.categories, users=60, seed=13)
    sent = post_batches(base, "test-write", list(generator.events(800)), batch_size=100)
    gap = settings.session_timeout_seconds * 1000
    store = store_for(settings.redis_url, gap)
    expected = ground_truth(sent, catalog, gap)
    assert wait_for_profiles(store, expected, timeout=90) == expected

    stop = threading.Event()

    def send_until_stopped() -> None:
        while not stop.is_set():
            sent.extend(post_batches(base, "test-write", list(generator.events(100)), batch_size=10))

    sender = threading.Thread(target=send_until_stopped)
    sender.start()
    try:
        during = [reconcile(settings) for _ in range(2)]  # the archive and Redis move under it
    finally:
        stop.set()
        sender.join()
    for report in during:
        assert not report.drifted, report.as_dict()
        assert report.matched > 0, report.as_dict()

    # Once quiet, every profile is compared, and real drift is found.
    expected = ground_truth(sent, catalog, gap)
    assert wait_for_profiles(store, expected, timeout=90) == expected
    quiet = reconcile(settings)
    assert not quiet.drifted and quiet.in_flight == 0 and quiet.matched == len(expected), quiet.as_dict()
    victim = sorted(expected)[0]
    redis_client.hincrby(profile_keys(victim).fields, "event_count", 1)
    drift = reconcile(settings)
    assert drift.mismatched == 1 and drift.mismatched_fields == {"event_count": 1}, drift.as_dict()
