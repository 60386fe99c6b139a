"""The forget contract on real processes (broker, Redis, profile app, archiver, API): events in
flight at the forget are never counted, a Redis wipe plus replay and reconcile keep the person
forgotten, later events start a new profile, the forget run purges every archived row of the
person and the report says what was erased where."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest
from confluent_kafka import Producer

from assets.archive import read_valid_events
from assets.batch_runs import reconcile, replay
from assets.dead_letters import read_dead_letters
from core.forget_record import ForgetRecord
from core.resources import PulseResource
from core.time_format import iso_from_ms
from orchestration.platform import settings_process_env
from streaming.profiles.keys import FORGET_MIRROR_KEY, forgotten_key, owner_key
from tests.integration.helpers import (
    eventually,
    ground_truth,
    post_batches,
    publish_sample_catalog,
    store_for,
    wait_for_profiles,
)

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
GONE, ANON, STAY = "u-gone", "a-gone", "u-stay"


def an_event(
    event_type: str, at_ms: int, user_id: str | None = None, anonymous_id: str | None = None, **metadata: Any
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "timestamp": iso_from_ms(at_ms),
        "metadata": metadata or {"category": "shoes"},
    }
    if user_id:
        event["user_id"] = user_id
    if anonymous_id:
        event["anonymous_id"] = anonymous_id
    return event


def start(pulse_apps, settings) -> tuple[Any, str]:
    """The profile app (returned, to pause it), the archiver and the API; the API's base URL."""
    profile_app = pulse_apps("profile-app")
    pulse_apps("archiver")
    pulse_apps("api")
    return profile_app, f"http://{settings.api_host}:{settings.api_port}"


def forget(base: str, profile_id: str) -> dict[str, Any]:
    response = httpx.delete(f"{base}/v1/profiles/{profile_id}", headers={"X-Pulse-Key": "test-read"})
    assert response.status_code == 202, response.text
    return response.json()


def skipped(redis_client, ids: list[str]) -> int:
    return sum(int(redis_client.hget(forgotten_key(pid), "skipped") or 0) for pid in ids)


def test_events_in_flight_at_the_forget_are_never_counted_and_later_ones_start_anew(
    settings, pulse_apps, redis_client
):
    catalog = publish_sample_catalog(redis_client)
    profile_app, base = start(pulse_apps, settings)
    gap = settings.session_timeout_seconds * 1000
    now = int(time.time() * 1000)
    minute = 60_000
    early = [
        an_event("identify", now - 30 * minute, GONE, ANON),
        an_event("page_view", now - 29 * minute, anonymous_id=ANON),
        an_event("page_view", now - 28 * minute, GONE),
        an_event("page_view", now - 28 * minute, STAY),
    ]
    post_batches(base, "test-write", early)
    store = store_for(settings.redis_url, gap)
    assert eventually(
        lambda: (
            (store.get_person(ANON) or {}).get("event_count") == 3
            and (store.get_person(STAY) or {}).get("event_count") == 1
        ),
        60,
    )

    # The profile app stops consuming: what is produced now is still in flight at the forget.
    os.kill(profile_app.process.pid, signal.SIGSTOP)
    try:
        in_flight = [
            an_event("page_view", now - 10 * minute, GONE),
            an_event("purchase", now - 9 * minute, GONE, order_id="o-1", price=12.5),
            an_event("page_view", now - 8 * minute, anonymous_id=ANON),
            an_event("add_to_cart", now - 7 * minute, GONE, ANON, product_id="p00001", quantity=1),
        ]
        stay_in_flight = [an_event("page_view", now - 10 * minute, STAY)]
        post_batches(base, "test-write", in_flight + stay_in_flight)
        assert forget(base, ANON) == {"profile_id": ANON, "forgotten": True}  # the anonymous id: the person
        suppressions = ForgetRecord(settings.forget_path).suppressions()
        assert set(suppressions) == {GONE, ANON}  # durable before the answer
        forgotten_at = suppressions[GONE]
        assert store.get_person(GONE) is None and store.get_person(ANON) is None
        # The person comes back: events after the forget time.
        later = [
            an_event("page_view", forgotten_at + 1_000, GONE),
            an_event("page_view", forgotten_at + 2_000, anonymous_id=ANON),
        ]
        post_batches(base, "test-write", later)
    finally:
        os.kill(profile_app.process.pid, signal.SIGCONT)

    expected = ground_truth([*early[3:], *stay_in_flight, *later], catalog, gap)
    assert wait_for_profiles(store, expected, timeout=60) == expected
    # Every in-flight event of the person was skipped (each counted once) and none was counted.
    assert eventually(lambda: skipped(redis_client, [GONE, ANON]) == len(in_flight), 30)
    assert store.get_person(GONE)["event_count"] == 1  # the later event only
    assert store.get_person(ANON)["event_count"] == 1  # a new anonymous visitor, nobody's
    assert GONE.encode() not in redis_client.zrange(owner_key(ANON), 0, -1)  # the in-flight link is not back
    assert not redis_client.hgetall(f"pulse:{{{GONE}}}:decisions")
    # The archive holds them all (the forget run purges them later); the stream skipped them.
    assert eventually(
        lambda: (
            len(read_valid_events(settings.archive_path)) == len(early + in_flight + stay_in_flight + later)
        ),
        60,
    )


def test_forget_survives_a_redis_wipe_a_replay_and_reconcile(settings, pulse_apps, redis_client, broker):
    catalog = publish_sample_catalog(redis_client)
    _, base = start(pulse_apps, settings)
    gap = settings.session_timeout_seconds * 1000
    now = int(time.time() * 1000)
    before = [an_event("page_view", now - (20 - i) * 60_000, GONE, ANON) for i in range(5)]
    before += [an_event("page_view", now - 20 * 60_000, STAY), an_event("click", now - 19 * 60_000, STAY)]
    post_batches(base, "test-write", before)
    store = store_for(settings.redis_url, gap)
    assert eventually(lambda: (store.get_person(GONE) or {}).get("event_count") == 5, 60)
    forget(base, GONE)
    forgotten_at = ForgetRecord(settings.forget_path).suppressions()[GONE]
    later = [an_event("search", forgotten_at + 1_000, GONE, query="boots")]
    post_batches(base, "test-write", later)
    expected = ground_truth([*before[5:], *later], catalog, gap)
    assert wait_for_profiles(store, expected, timeout=60) == expected
    assert eventually(lambda: len(read_valid_events(settings.archive_path)) == len(before) + len(later), 60)
    report = reconcile(settings)
    assert not report.drifted and report.matched == len(expected), report.as_dict()

    # Redis loses everything, the forget mirror included.
    redis_client.flushall()
    publish_sample_catalog(redis_client)
    # A producer that knows nothing of the forget sends the person's old events again: the stream
    # restores the mirror from the durable record before applying anything, and skips them.
    producer = Producer({"bootstrap.servers": broker})
    for event in before[:5]:
        producer.produce(settings.topic_events, json.dumps(event).encode(), key=GONE.encode())
    assert producer.flush(30) == 0
    assert eventually(lambda: skipped(redis_client, [GONE]) == 5, 60)
    assert eventually(lambda: len(read_valid_events(settings.archive_path)) == len(before) + 1 + 5, 60)
    assert redis_client.exists(FORGET_MIRROR_KEY)
    assert int(redis_client.hget(forgotten_key(ANON), "at")) == forgotten_at
    assert store.get_person(GONE) is None

    # Replay rebuilds every profile: the person's later event only, everyone else whole.
    summary = replay(settings, None, None)
    assert summary.skipped_forgotten == 5 + 5  # archived twice over: the POSTs and the producer above
    assert wait_for_profiles(store, expected, timeout=60) == expected
    report = reconcile(settings)
    assert not report.drifted and report.matched == len(expected), report.as_dict()


def pulse(settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orchestration.cli", *args],
        env=settings_process_env(settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_forget_run_purges_valid_invalid_and_dead_letter_rows_and_reports_them(
    settings, pulse_apps, redis_client, broker
):
    publish_sample_catalog(redis_client)
    _, base = start(pulse_apps, settings)
    now = int(time.time() * 1000)
    valid = [an_event("page_view", now - (10 - i) * 60_000, GONE) for i in range(3)]
    valid.append(an_event("page_view", now - 10 * 60_000, STAY))
    post_batches(base, "test-write", valid)
    # Rejected by the collector: a dead letter naming the person.
    response = httpx.post(
        f"{base}/v1/events",
        headers={"X-Pulse-Key": "test-write"},
        json={"events": [{**an_event("purchase", now - 60_000, GONE), "metadata": {"price": -1}}]},
    )
    assert response.status_code == 202 and len(response.json()["rejected"]) == 1
    # Written to the events topic by another producer, invalid: an invalid archive row, and a
    # dead letter of the profile app.
    producer = Producer({"bootstrap.servers": broker})
    producer.produce(settings.topic_events, json.dumps({"user_id": GONE, "note": "no event_id"}).encode())
    assert producer.flush(30) == 0
    root = settings.archive_path

    def archived() -> tuple[int, int, int]:
        events = [e for e in read_valid_events(root) if e.key == GONE]
        letters = [d for d in read_dead_letters(root) if GONE.encode() in bytes(d.raw)]
        invalid = _invalid_rows(root)
        return len(events), invalid, len(letters)

    assert eventually(lambda: archived() == (3, 1, 2), 60), archived()

    forgot = pulse(settings, "forget", GONE)
    assert forgot.returncode == 0, forgot.stderr
    body = json.loads(forgot.stdout)
    assert (body["forgotten"], body["ids"]) == (True, [GONE])
    pending = json.loads(pulse(settings, "forget", "report", GONE).stdout)
    assert pending["archive"]["purged"] is False and pending["redis"]["keys_deleted"] > 0

    forgotten_at = ForgetRecord(settings.forget_path).suppressions()[GONE]
    later = an_event("page_view", forgotten_at + 1_000, GONE)
    post_batches(base, "test-write", [later])
    assert eventually(lambda: archived()[0] == 4, 60)

    resources = {
        "pulse": PulseResource(
            data_dir=str(settings.data_path),
            redis_url=settings.redis_url,
            kafka_brokers=settings.kafka_brokers,
        )
    }
    from orchestration.jobs import forget_job

    result = forget_job.execute_in_process(resources=resources, instance=dg.DagsterInstance.ephemeral())
    assert result.success
    metadata = result.output_for_node("purge_forgotten_users")
    assert metadata == 3 + 1 + 2
    assert archived() == (1, 0, 0)  # the later event stays
    assert [e.key for e in read_valid_events(root)].count(STAY) == 1

    report = pulse(settings, "forget", "report", GONE)
    assert report.returncode == 0, report.stderr
    body = json.loads(report.stdout)
    assert body["forgotten"] is True and body["ids"] == [GONE]
    assert body["archive"]["purged"] is True
    assert body["archive"]["rows_erased"] == {"valid": 3, "invalid": 1, "dead_letters": 2}
    events_topic = body["broker"][settings.topic_events]
    assert events_topic["retention_ms"] == settings.topic_retention_ms
    assert events_topic["held_until"] == iso_from_ms(forgotten_at + settings.topic_retention_ms)
    # A second run finds nothing more; the report still sums what was erased.
    forget_job.execute_in_process(resources=resources, instance=dg.DagsterInstance.ephemeral())
    again = json.loads(pulse(settings, "forget", "report", GONE).stdout)
    assert again["archive"]["rows_erased"] == body["archive"]["rows_erased"]
    assert pulse(settings, "forget", "report", "never-forgotten").returncode == 1


def _invalid_rows(root: Path) -> int:
    """Invalid rows of the events archive that name GONE in their raw JSON."""
    import duckdb

    from core.archive_layout import archive_records_sql, has_archive

    if not has_archive(root):
        return 0
    with duckdb.connect() as con:
        query = (
            f"SELECT count(*) FROM ({archive_records_sql(root, 'NOT valid')}) WHERE contains(decode(raw), ?)"
        )
        return con.execute(query, [GONE]).fetchone()[0]


def test_rule_backtests_leave_out_forgotten_events(settings, redis_client):
    """`pulse rules test` over the archive counts what the stream would: not a forgotten person's past."""
    from assets.batch_runs import backtest_rules
    from streaming.profiles.store import RedisProfileStore
    from tests.integration.test_dagster import write_archive

    now = int(time.time() * 1000)
    views = [an_event("page_view", now - (9 - i) * 60_000, user) for user in (GONE, STAY) for i in range(4)]
    write_archive(settings, [json.dumps(e).encode() for e in views])
    rules = ROOT / "data" / "rules" / "rules.yaml"
    assert backtest_rules(settings, rules, None, None).as_dict()["events"] == 8
    store = RedisProfileStore(
        redis_client,
        dedupe_window_seconds=3600,
        session_gap_ms=1_800_000,
        forget_record=ForgetRecord(settings.forget_path),
    )
    store.forget(GONE)
    redis_client.flushall()  # the durable record alone
    report = backtest_rules(settings, rules, None, None).as_dict()
    assert (report["events"], report["people"]) == (4, 1)


def test_a_store_on_a_wiped_redis_restores_the_mirror_before_it_applies_anything(redis_client, tmp_path):
    """One server: the update call refuses to run without the mirror, the store restores it and retries."""
    from streaming.profiles.store import RedisProfileStore
    from streaming.profiles.suppression import ensure_mirror
    from tests.unit.test_profile_reference import delta_of, make_event

    record = ForgetRecord(tmp_path / "forget")
    store = RedisProfileStore(
        redis_client, dedupe_window_seconds=3600, session_gap_ms=1_800_000, forget_record=record
    )
    old, new = make_event(ts_ms=0, user_id=GONE), make_event(ts_ms=10_000, user_id=GONE)
    assert store.apply_deltas([delta_of(old)]) == 1
    store.forget(GONE, at_ms=old.timestamp_ms + 5_000)
    redis_client.flushall()
    replayed = make_event(ts_ms=1_000, user_id=GONE)  # before the forget, never seen by this Redis
    assert store.apply_deltas([delta_of(replayed), delta_of(new), delta_of(make_event(user_id=STAY))]) == 2
    assert store.skipped_forgotten == 1
    assert store.get_profile(GONE)["event_count"] == 1  # the later event: a new profile
    assert int(redis_client.get(FORGET_MIRROR_KEY)) == record.size()

    # A forget only the record has (its Redis write failed): copied by the next check, and only it.
    assert ensure_mirror(redis_client, record) is False
    record.append_forget(STAY, [STAY], old.timestamp_ms + 60_000)
    redis_client.delete(forgotten_key(GONE))  # not copied again: the marker says it is there
    assert ensure_mirror(redis_client, record) is True
    assert int(redis_client.hget(forgotten_key(STAY), "at")) == old.timestamp_ms + 60_000
    assert not redis_client.exists(forgotten_key(GONE))
    assert int(redis_client.get(FORGET_MIRROR_KEY)) == record.size()
