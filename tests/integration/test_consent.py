"""Consent end to end with real processes (API, profile app, archiver) on a real broker and Redis."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import duckdb
import httpx
import pytest

from assets.batch_runs import reconcile
from assets.forget_run import purge_forgotten
from core.archive_layout import archive_glob, has_archive
from core.forget_record import ForgetRecord
from streaming.profiles.keys import forgotten_key
from tests.integration.helpers import eventually, start_platform, store_for

pytestmark = pytest.mark.integration


def _event(user: str, minute: int, consent: dict | None = None) -> dict:
    event = {
        "event_id": str(uuid.uuid4()),
        "event_type": "page_view",
        "user_id": user,
        "timestamp": f"2026-03-01T10:{minute:02d}:00Z",
        "metadata": {"category": "shoes"},
    }
    if consent is not None:
        event["consent"] = consent
    return event


def test_events_without_personalization_consent_are_archived_not_profiled(settings, pulse_apps, redis_client):
    # redis_client: an empty Redis, so reconcile sees this test's profiles only
    base = start_platform(pulse_apps, settings)
    events = [
        _event("person-1", 1),  # says nothing: counted (opt_out, the default)
        _event("refuser-1", 2, {"personalization": False, "analytics": True}),  # no profile at all
        _event("person-1", 3, {"personalization": True}),
        _event("refuser-1", 4, {"personalization": False}),
        _event("person-1", 5, {"analytics": False}),  # another purpose: still counted
    ]
    with httpx.Client(base_url=base, timeout=10, headers={"X-Pulse-Key": "test-write"}) as http:
        answer = http.post("/v1/events", json={"events": events})
        assert answer.status_code == 202 and answer.json()["accepted"] == 5, answer.text
        metrics = http.get("/metrics").text
    assert 'pulse_collector_consent_refused_events_total{purpose="personalization"} 2.0' in metrics
    assert 'pulse_collector_consent_refused_events_total{purpose="analytics"} 1.0' in metrics

    def archived() -> list:
        if not has_archive(settings.archive_path):
            return []
        with duckdb.connect() as con:
            return con.execute(
                "SELECT user_id, consent_analytics, consent_personalization "
                "FROM read_parquet($g, union_by_name = true) ORDER BY event_time",
                {"g": archive_glob(settings.archive_path)},
            ).fetchall()

    assert eventually(lambda: len(archived()) == 5, 60)
    assert archived() == [
        ("person-1", None, None),
        ("refuser-1", True, False),
        ("person-1", None, True),
        ("refuser-1", None, False),
        ("person-1", False, None),
    ]
    store = store_for(settings.redis_url, settings.session_timeout_seconds * 1000)
    assert eventually(lambda: (store.get_profile("person-1") or {}).get("event_count") == 3, 60)
    profile = store.get_profile("person-1")
    assert profile["category_views"] == {"shoes": 3}
    assert store.get_profile("refuser-1") is None
    report = reconcile(settings)  # the batch recompute leaves out the same events
    assert (report.profiles_checked, report.mismatched, report.missing_in_redis, report.extra_in_redis) == (
        1,
        0,
        0,
        0,
    )


def test_withdrawing_consent_forgets_the_person_for_personalization_but_keeps_the_archive(
    settings, pulse_apps, redis_client
):
    base = start_platform(pulse_apps, settings)
    store = store_for(settings.redis_url, settings.session_timeout_seconds * 1000)

    def post(*events: dict) -> None:
        with httpx.Client(base_url=base, timeout=10, headers={"X-Pulse-Key": "test-write"}) as http:
            answer = http.post("/v1/events", json={"events": list(events)})
            assert answer.status_code == 202 and answer.json()["accepted"] == len(events), answer.text

    def count() -> int | None:
        return (store.get_profile("person-2") or {}).get("event_count")

    late = _event("person-2", 0, {"personalization": True})  # sent before the withdrawal, arrives after
    post(_event("person-2", 1, {"personalization": True}), _event("person-2", 2))
    assert eventually(lambda: count() == 2, 60)
    post(_event("person-2", 3, {"personalization": False}))  # withdrawn: forgotten for personalization
    assert eventually(lambda: redis_client.exists(forgotten_key("person-2")) == 1, 60)
    assert eventually(lambda: store.get_profile("person-2") is None, 30)
    post(late, _event("person-2", 4, {"personalization": False}))  # neither counts, nor forgets again
    back = datetime.now(UTC) + timedelta(minutes=5)
    returning = {**_event("person-2", 0), "timestamp": back.isoformat()}  # consent given again, later
    post({**returning, "consent": {"personalization": True}})
    assert eventually(lambda: count() == 1, 60)
    record = ForgetRecord(settings.forget_path).forgets()
    assert [(f["ids"], f.get("purpose")) for f in record] == [(["person-2"], "personalization")]

    def archived() -> int:
        with duckdb.connect() as con:
            return con.execute(
                "SELECT count(*) FROM read_parquet($g, union_by_name = true) WHERE user_id = 'person-2'",
                {"g": archive_glob(settings.archive_path)},
            ).fetchone()[0]

    assert eventually(lambda: has_archive(settings.archive_path) and archived() == 6, 60)
    result, _, _ = purge_forgotten(settings)  # the forget run erases nothing of a withdrawn consent
    assert result.rows_removed == 0 and archived() == 6
    report = reconcile(settings)  # replay, rebuild and recompute leave out what the withdrawal forgot
    assert (report.profiles_checked, report.mismatched, report.missing_in_redis, report.extra_in_redis) == (
        1,
        0,
        0,
        0,
    )
