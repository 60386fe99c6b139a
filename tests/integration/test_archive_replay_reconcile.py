"""Archive -> reconcile -> Redis wiped -> replay -> zero drift; injected drift is caught."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from assets.archive import read_valid_events
from assets.batch_runs import reconcile, replay
from orchestration.demo_traffic import TrafficGenerator
from orchestration.platform import settings_process_env
from streaming.profiles.keys import profile_keys
from tests.integration.helpers import (
    ground_truth,
    post_batches,
    publish_sample_catalog,
    start_platform,
    store_for,
    wait_for_profiles,
)

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_reconcile_replay_and_drift(settings, pulse_apps, redis_client):
    catalog = publish_sample_catalog(redis_client)
    base = start_platform(pulse_apps, settings)
    events = list(TrafficGenerator(catalog.categories, users=40, seed=21).events(1200))
    acknowledged = post_batches(base, "test-write", events, batch_size=100)
    expected = ground_truth(acknowledged, catalog, settings.session_timeout_seconds * 1000)
    store = store_for(settings.redis_url, settings.session_timeout_seconds * 1000)
    assert wait_for_profiles(store, expected, timeout=60) == expected
    distinct_valid = sum(doc["event_count"] for doc in expected.values())
    wait_until(
        lambda: len({e.raw for e in read_valid_events(settings.archive_path)}) >= distinct_valid,
        60,
        "the archive",
    )

    report = reconcile(settings)
    assert not report.drifted, report.as_dict()
    assert report.matched == len(expected)

    # Injected drift: a wrong field, a missing profile, an extra profile.
    some, other = sorted(expected)[:2]
    redis_client.hincrby(profile_keys(some).fields, "event_count", 5)
    redis_client.delete(profile_keys(other).fields)
    redis_client.hset(profile_keys("ghost").fields, mapping={"event_count": 1})
    report = reconcile(settings)
    assert (report.mismatched, report.missing_in_redis, report.extra_in_redis) == (1, 1, 1)
    assert report.mismatched_fields == {"event_count": 1}

    # The CLI contract: JSON with the counts, exit status 1 on drift.
    result = subprocess.run(
        [sys.executable, "-m", "orchestration.cli", "reconcile", "--json"],
        env=settings_process_env(settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    body = json.loads(result.stdout)
    assert {k: body[k] for k in ("mismatched", "missing_in_redis", "extra_in_redis")} == {
        "mismatched": 1,
        "missing_in_redis": 1,
        "extra_in_redis": 1,
    }

    # Redis loses everything; replay rebuilds every profile exactly (the catalog is republished first).
    redis_client.flushdb()
    publish_sample_catalog(redis_client)
    summary = replay(settings, None, None)
    assert summary.replayed >= distinct_valid
    assert wait_for_profiles(store, expected, timeout=60) == expected
    # Replaying again over live profiles counts nothing twice.
    replay(settings, None, None)
    time.sleep(2)
    assert wait_for_profiles(store, expected, timeout=10) == expected
    report = reconcile(settings)
    assert not report.drifted, report.as_dict()


def test_replay_refuses_events_whose_dedupe_markers_expired_over_live_profiles(settings, redis_client):
    """Archived 2023 (kafka_timestamp): their markers are long gone. Over a live profile a replay would
    count them again, so it refuses and sends nothing; once that profile is absent, it rebuilds it."""
    from assets.batch_runs import ReplayWouldRecount
    from streaming.profiles.keys import fields_key
    from tests.integration.test_collector_api import read_topic
    from tests.integration.test_dagster import write_archive

    events = [e for e in TrafficGenerator({"p1": "shoes"}, users=4, seed=8).events(80) if "event_id" in e]
    write_archive(settings, [json.dumps(e).encode() for e in events])
    live = events[0].get("user_id") or events[0]["anonymous_id"]
    redis_client.hset(fields_key(live), "event_count", 1)  # the person the stream already counted

    with pytest.raises(ReplayWouldRecount, match=f"1 live profiles \\(e.g. {live}\\)"):
        replay(settings, None, None)
    assert read_topic(settings.kafka_brokers, settings.topic_events, 1, timeout=3) == []

    # Without that live profile, the replay rebuilds it exactly: nothing of it is counted yet.
    redis_client.delete(fields_key(live))
    summary = replay(settings, None, None)
    assert summary.replayed == len(read_valid_events(settings.archive_path)) > 0


def test_pulse_replay_says_why_it_refuses_and_exits_2(settings, redis_client):
    from streaming.profiles.keys import fields_key
    from tests.integration.test_dagster import write_archive

    event = next(e for e in TrafficGenerator({"p1": "shoes"}, users=2, seed=9).events(20) if "event_id" in e)
    write_archive(settings, [json.dumps(event).encode()])
    redis_client.hset(fields_key(event.get("user_id") or event["anonymous_id"]), "event_count", 1)
    result = subprocess.run(
        [sys.executable, "-m", "orchestration.cli", "replay"],
        env=settings_process_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 2, result.stderr
    assert "refused, nothing sent" in result.stderr and "dedupe window" in result.stderr
