"""Dead letters as data, with real processes: rejects of the collector and the profile app are
archived with their reasons, fixed and replayed with `pulse dlq replay --fix`, each counted once."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import duckdb
import httpx
import pytest
from confluent_kafka import Producer

from assets.analyst_views import create_views
from assets.dead_letters import read_dead_letters
from orchestration.platform import settings_process_env
from tests.integration.helpers import eventually, publish_sample_catalog, start_platform, store_for

pytestmark = pytest.mark.integration

PULSE = Path(sys.executable).parent / "pulse"
USER = "dlq-user"
FIX = '''
def add_order_id(event):
    """Purchases sent without an order id get one made from their event id."""
    if event.get("event_type") != "purchase":
        return None
    return {**event, "metadata": {**event["metadata"], "order_id": "fixed-" + event["event_id"]}}
'''


def an_event(event_type: str = "page_view", **metadata: object) -> dict:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "user_id": USER,
        "timestamp": "2026-12-01T10:00:00.000Z",
        "metadata": {"category": "shoes", **metadata},
    }


def pulse(settings, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(PULSE), *args],
        env=settings_process_env(settings),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_rejects_are_archived_fixed_and_replayed_once(settings, pulse_apps, redis_client, tmp_path):
    publish_sample_catalog(redis_client)
    base = start_platform(pulse_apps, settings)
    store = store_for(settings.redis_url, settings.session_timeout_seconds * 1000)

    # The collector rejects purchases without an order id (3) and an event without a UUID (1) ...
    views = [an_event() for _ in range(2)]
    unpaid = [an_event("purchase", price=10.0) for _ in range(3)]
    hopeless = {**an_event("purchase", price=1.0), "event_id": "not-a-uuid"}
    forgotten = {**an_event("purchase", price=2.0), "user_id": "dlq-forgotten"}  # forgotten before the replay
    response = httpx.post(
        f"{base}/v1/events",
        json={"events": [*views, *unpaid, hopeless, forgotten]},
        headers={"X-Pulse-Key": "test-write"},
        timeout=30,
    )
    assert response.status_code == 202 and response.json()["accepted"] == 2
    # ... and the profile app rejects what a script wrote straight to the topic (2).
    direct = [an_event("purchase", price=5.0) for _ in range(2)]
    producer = Producer({"bootstrap.servers": settings.kafka_brokers})
    for obj in direct:
        producer.produce(settings.topic_events, json.dumps(obj).encode(), key=USER.encode())
    assert producer.flush(30) == 0

    assert eventually(lambda: len(read_dead_letters(settings.archive_path)) == 7, timeout=90)
    letters = read_dead_letters(settings.archive_path)
    assert sorted(d.source for d in letters) == ["collector"] * 5 + ["profile-app"] * 2
    assert {d.error for d in letters} == {
        "purchase needs metadata.order_id",
        "event_id must be a UUID, got 'not-a-uuid'",
    }
    assert {json.loads(d.raw)["event_id"] for d in letters} == {
        e["event_id"] for e in [*unpaid, hopeless, forgotten, *direct]
    }

    # events_invalid: every reject once, the collector's included (the profile app's rejects are
    # in the events archive too; their dead letter names them, so they are not counted twice).
    def invalid_rows() -> list[tuple]:
        database = tmp_path / "views.duckdb"
        create_views(database, settings.archive_path)
        with duckdb.connect(str(database)) as con:
            return con.execute("SELECT source, error, user_id FROM events_invalid ORDER BY ALL").fetchall()

    assert eventually(lambda: len(invalid_rows()) == 7, timeout=30)
    assert {(s, u) for s, _, u in invalid_rows()} == {
        ("collector", USER),
        ("profile-app", USER),
        ("collector", "dlq-forgotten"),
    }

    listing = pulse(settings, "dlq", "--json", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    reasons = {r["reason"]: (r["count"], r["sources"]) for r in json.loads(listing.stdout)}
    assert reasons == {
        "purchase needs metadata.order_id": (6, {"collector": 4, "profile-app": 2}),
        "event_id must be a UUID": (1, {"collector": 1}),
    }
    human = pulse(settings, "dlq", cwd=tmp_path)
    assert "7 dead letters, 2 reasons" in human.stdout and "pulse dlq replay" in human.stdout

    # A bad fix is a usage error and sends nothing.
    assert pulse(settings, "dlq", "replay", "--fix", "no_such_fixes:fix", cwd=tmp_path).returncode == 2

    (tmp_path / "shop_fixes.py").write_text(FIX)
    store.forget("dlq-forgotten")
    dry = pulse(
        settings, "dlq", "replay", "--fix", "shop_fixes:add_order_id", "--dry-run", "--json", cwd=tmp_path
    )
    assert dry.returncode == 0, dry.stderr
    summary = json.loads(dry.stdout)
    assert (summary["republished"], summary["dry_run"], summary["skipped_forgotten"]) == (5, True, 1)

    first = pulse(settings, "dlq", "replay", "--fix", "shop_fixes:add_order_id", "--json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert (summary["republished"], summary["still_invalid"], summary["already_replayed"]) == (5, 1, 0)
    assert summary["skipped_forgotten"] == 1
    assert summary["still_invalid_by_reason"] == {"event_id must be a UUID": 1}

    second = pulse(settings, "dlq", "replay", "--fix", "shop_fixes:add_order_id", "--json", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    summary = json.loads(second.stdout)
    assert (summary["republished"], summary["still_invalid"], summary["already_replayed"]) == (0, 1, 5)
    assert summary["skipped_forgotten"] == 1

    # Every republished event passed through the stream once a later event of the same user (same
    # key, same partition, so behind them) has been counted.
    sentinel = an_event("click")
    response = httpx.post(
        f"{base}/v1/events", json=sentinel, headers={"X-Pulse-Key": "test-write"}, timeout=30
    )
    assert response.status_code == 202 and response.json()["accepted"] == 1

    def profile() -> dict | None:
        return store.get_profile(USER)

    assert eventually(lambda: (profile() or {}).get("counts_by_type", {}).get("click") == 1, timeout=60)
    document = profile()
    assert document["counts_by_type"] == {"page_view": 2, "purchase": 5, "click": 1}
    assert document["event_count"] == 8
    assert document["purchase_total"] == pytest.approx(3 * 10.0 + 2 * 5.0)
    assert store.get_profile("dlq-forgotten") is None
