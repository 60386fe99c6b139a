"""`pulse rebuild` and `pulse replay --rebuild`: people recomputed from the archive under traffic, exactly."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from assets.archive import read_valid_events
from assets.batch_runs import ReplayWouldRecount, reconcile, replay
from assets.profile_rebuild import rebuild_profiles
from core.resources import PulseResource
from enrichment.catalog import Catalog
from orchestration.demo_traffic import TrafficGenerator
from orchestration.jobs import rebuild_profiles_job
from orchestration.platform import settings_process_env
from streaming.profile_app.pipeline import check_record
from streaming.profiles.keys import fields_key, profile_keys
from streaming.profiles.rebuild_wipe import PartWiper
from tests.integration.helpers import (
    SHIPPED_TRAITS,
    eventually,
    ground_truth,
    post_batches,
    publish_sample_catalog,
    start_platform,
    store_for,
    wait_for_profiles,
)
from tests.integration.test_dagster import write_archive

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def _key(event: dict) -> str:
    return event.get("user_id") or event.get("anonymous_id") or ""


def _distinct_valid_ids(sent: list[dict], catalog: Catalog, profile_id: str) -> int:
    """Distinct valid event_ids keyed by ``profile_id`` among the acknowledged events."""
    ids = set()
    for event in sent:
        checked = check_record(json.dumps(event).encode(), catalog, SHIPPED_TRAITS)
        if checked.delta is not None and checked.delta.profile_id == profile_id:
            ids.add(checked.delta.event_id)
    return len(ids)


def _fresh_event(profile: dict, rng: random.Random) -> dict:
    """A new valid event of a person, as it happens now."""
    event = {
        "event_id": str(uuid.uuid4()),
        "event_type": rng.choice(["page_view", "click", "add_to_cart"]),
        "timestamp": datetime.now(UTC).isoformat(),
        "metadata": {"category": rng.choice(["shoes", "bags"]), "product_id": "p1"},
    }
    event.update({k: profile[k] for k in ("user_id", "anonymous_id") if profile.get(k)})
    return event


def test_rebuild_chosen_people_and_everyone_while_their_events_keep_arriving(
    settings, pulse_apps, redis_client
):
    catalog = publish_sample_catalog(redis_client)
    base = start_platform(pulse_apps, settings)
    gap = settings.session_timeout_seconds * 1000
    generator = TrafficGenerator(catalog.categories, users=30, seed=31)
    sent = post_batches(base, "test-write", list(generator.events(700)), batch_size=100)
    store = store_for(settings.redis_url, gap)
    expected = ground_truth(sent, catalog, gap)
    assert wait_for_profiles(store, expected, timeout=90) == expected

    # People to rebuild: a user with linked anonymous ids (asked for by one of those), and another user.
    users = sorted(pid for pid, doc in expected.items() if doc["user_id"] and doc["anonymous_ids"])
    assert len(users) >= 2, "the traffic has identified users with anonymous history"
    first, second = users[:2]
    anonymous_of_first = sorted(a for a in expected[first]["anonymous_ids"] if a in expected)
    asked = [anonymous_of_first[0] if anonymous_of_first else first, second]
    # Drift on them that only a recompute repairs.
    redis_client.hincrby(fields_key(first), "event_count", 7)
    redis_client.hset(fields_key(second), "t:page_view", 999)

    # Traffic during the rebuilds: new events of the rebuilt people (some sent twice), redeliveries
    # of their old events (their markers are wiped: counted once, whichever side gets there first),
    # and everyone else's traffic, all the time; and for certain, between the wipes and the
    # re-application, such events of theirs that the stream applies before the rebuild gets there.
    rng = random.Random(5)
    old_of_them = [e for e in sent if "event_id" in e and _key(e) in (first, second)]
    stop = threading.Event()
    before = dict(expected)

    def their_events() -> list[dict]:
        batch = [_fresh_event(expected[pid], rng) for pid in (first, second, first)]
        return [*batch, batch[0], rng.choice(old_of_them)]

    def send_until_stopped() -> None:
        while not stop.is_set():
            sent.extend(post_batches(base, "test-write", [*their_events(), *generator.events(20)], 50))
            time.sleep(0.05)

    between: list[list[dict]] = []

    def after_the_wipes(stage: str, done: int, _total: int) -> None:
        if stage != "archiving" or done != 0:
            return
        # Wiped, and already given back what the archive held before: not empty while it waits.
        for pid in (first, second):
            assert store.get_profile(pid)["event_count"] >= before[pid]["event_count"]
        acknowledged = post_batches(base, "test-write", their_events())
        sent.extend(acknowledged)
        between.append(acknowledged)
        valid = [d for e in acknowledged if (d := check_record(json.dumps(e).encode(), catalog).delta)]
        markers = {profile_keys(d.profile_id).seen_prefix + d.event_id for d in valid}
        assert eventually(lambda: redis_client.exists(*markers) == len(markers), 60), (
            "the stream applied them"
        )

    sender = threading.Thread(target=send_until_stopped)
    sender.start()
    try:
        chosen = rebuild_profiles(settings, asked, progress=after_the_wipes)
        everyone = rebuild_profiles(settings, all_profiles=True, progress=after_the_wipes)
    finally:
        stop.set()
        sender.join()

    assert sorted(chosen.people) == sorted([first, second]), chosen.as_dict()
    assert {first, second, *anonymous_of_first} <= set(chosen.part_ids)
    assert chosen.markers_deleted > 0 and chosen.events_applied > 0, chosen.as_dict()
    assert everyone.parts >= len(expected) and everyone.events_applied > 0, everyone.as_dict()
    # What the stream applied between a wipe and the re-application was not counted again.
    for report, events in zip((chosen, everyone), between, strict=True):
        valid = {d.event_id for e in events if (d := check_record(json.dumps(e).encode(), catalog).delta)}
        assert report.already_applied >= len(valid) > 0, report.as_dict()

    expected = ground_truth(sent, catalog, gap)
    assert wait_for_profiles(store, expected, timeout=90) == expected
    for pid in (first, second, *anonymous_of_first):
        assert store.get_profile(pid)["event_count"] == _distinct_valid_ids(sent, catalog, pid)
    report = reconcile(settings)
    assert not report.drifted and report.matched == len(expected), report.as_dict()


def test_rebuild_a_person_redis_lost_through_the_dagster_job(settings, pulse_apps, redis_client, monkeypatch):
    catalog = publish_sample_catalog(redis_client)
    base = start_platform(pulse_apps, settings)
    gap = settings.session_timeout_seconds * 1000
    sent = post_batches(
        base, "test-write", list(TrafficGenerator(catalog.categories, users=12, seed=4).events(300))
    )
    store = store_for(settings.redis_url, gap)
    expected = ground_truth(sent, catalog, gap)
    assert wait_for_profiles(store, expected, timeout=90) == expected
    users = sorted(pid for pid, doc in expected.items() if doc["user_id"] and doc["anonymous_ids"])
    lost, emptied = users[0], users[1]
    # Every key of one person is gone (markers and links too); the other's state is gone but its
    # markers stay, which a replay cannot repair: they dedupe every event it sends.
    person = [lost, *(a for a in expected[lost]["anonymous_ids"] if a in expected)]
    for pid in person:
        redis_client.delete(*redis_client.keys(f"pulse:{{{pid}}}:*"))
    state = profile_keys(emptied)
    redis_client.delete(*state.state_keys)
    assert store.get_profile(lost) is None and store.get_profile(emptied) is None

    for name, value in settings_process_env(settings).items():  # the job's PulseSettings read them
        if name.startswith("PULSE_"):
            monkeypatch.setenv(name, value)
    pulse = PulseResource(
        data_dir=str(settings.data_path), redis_url=settings.redis_url, kafka_brokers=settings.kafka_brokers
    )
    result = rebuild_profiles_job.execute_in_process(
        resources={"pulse": pulse},
        instance=dg.DagsterInstance.ephemeral(),
        run_config={"ops": {"rebuild_from_archive": {"config": {"ids": [lost, emptied]}}}},
    )
    assert result.success
    metadata = next(
        e.event_specific_data.metadata for e in result.all_events if e.event_type_value == "STEP_OUTPUT"
    )
    emptied_person = [emptied, *(a for a in expected[emptied]["anonymous_ids"] if a in expected)]
    assert metadata["parts"].value == len(person) + len(emptied_person)
    assert metadata["events_applied"].value > 0
    assert wait_for_profiles(store, expected, timeout=30) == expected
    assert store.get_person(lost)["event_count"] == sum(expected[pid]["event_count"] for pid in person)
    assert not reconcile(settings).drifted

    # Again, from the command line: every event of the person is applied again, once, into its emptied parts.
    result = subprocess.run(
        [sys.executable, "-m", "orchestration.cli", "rebuild", "--json", lost],
        env=settings_process_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    events = sum(expected[pid]["event_count"] for pid in person)
    assert (body["people"], body["parts"], body["events_applied"], body["markers_deleted"]) == (
        [lost],
        len(person),
        events,
        events,
    )
    assert wait_for_profiles(store, expected, timeout=30) == expected


def test_the_wipe_finds_markers_made_while_it_looked(settings, redis_client):
    """The stream updates a part between the version read and the wipe: the wipe looks again; a part
    updated every round is wiped with the SCAN inside the script. No marker survives either way."""
    store = store_for(settings.redis_url, 1_800_000)

    rng = random.Random(3)

    def apply(profile_id: str) -> None:
        raw = json.dumps(_fresh_event({"user_id": profile_id}, rng)).encode()
        delta = check_record(raw, Catalog("none", {}), SHIPPED_TRAITS).delta
        assert delta is not None and store.apply_deltas([delta]) == 1

    class Racing(PartWiper):
        def __init__(self, client, rounds: int) -> None:
            super().__init__(client)
            self.rounds = rounds

        def _find_markers(self, ids):
            found = super()._find_markers(ids)
            if self.rounds > 0:  # the stream gets there between the SCAN and the wipe
                self.rounds -= 1
                apply("busy")
            return found

    for pid in ("busy", "quiet"):
        for _ in range(3):
            apply(pid)
    once = Racing(redis_client, rounds=1).wipe(["busy", "quiet"])
    assert (once.parts, once.retried, once.scanned_in_script, once.markers_deleted) == (2, 1, 0, 7)
    # Only the rebuild's mark is left (trait backfills skip the part), until the restore.
    assert redis_client.keys("pulse:{busy}:*") == [b"pulse:{busy}:rebuild"]
    Racing(redis_client, rounds=0).restore(["busy", "quiet"])
    assert not redis_client.keys("pulse:{busy}:*") and not redis_client.keys("pulse:{quiet}:*")

    for _ in range(2):
        apply("busy")
    always = Racing(redis_client, rounds=99).wipe(["busy"])
    assert (always.parts, always.scanned_in_script) == (1, 1)
    assert always.markers_deleted == 2 + 3  # and the three made while it looked
    assert redis_client.keys("pulse:{busy}:*") == [b"pulse:{busy}:rebuild"]
    # The stream's next event makes the part live again; a trait backfill still leaves it to the
    # rebuild (its old events have no marker now) until the restore.
    apply("busy")
    assert store.backfill([("busy", [{}, []])]) == [-1]
    PartWiper(redis_client).restore(["busy"])
    assert store.backfill([("busy", [{}, []])]) == [0]


def test_replay_past_the_dedupe_window_names_rebuild_and_rebuild_counts_exactly(
    settings, pulse_apps, redis_client
):
    """The archive's records arrived in 2023: their markers are long gone. One person is live (the
    stream counted their events then); a replay would count them twice, so it refuses, naming
    `pulse rebuild`. With --rebuild that person is rebuilt and everyone else replayed, once each."""
    catalog = publish_sample_catalog(redis_client)
    gap = settings.session_timeout_seconds * 1000
    events = [
        e for e in TrafficGenerator(catalog.categories, users=6, seed=12).events(150) if "event_id" in e
    ]
    write_archive(settings, [json.dumps(e).encode() for e in events])
    expected = ground_truth(events, catalog, gap)
    live = next(pid for pid, doc in expected.items() if doc["user_id"])
    store = store_for(settings.redis_url, gap)
    deltas = [
        d
        for e in events
        if (d := check_record(json.dumps(e).encode(), catalog, SHIPPED_TRAITS).delta) and d.profile_id == live
    ]
    store.apply_deltas(deltas)  # what the stream did in 2023 ...
    redis_client.delete(*redis_client.keys(f"{profile_keys(live).seen_prefix}*"))  # ... markers expired since

    with pytest.raises(ReplayWouldRecount, match=re.escape(f"pulse rebuild {live}")) as refused:
        replay(settings, None, None)
    assert refused.value.profile_ids == [live]
    result = subprocess.run(
        [sys.executable, "-m", "orchestration.cli", "replay"],
        env=settings_process_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert (
        result.returncode == 2 and "--rebuild" in result.stderr and f"pulse rebuild {live}" in result.stderr
    )

    pulse_apps("profile-app")
    summary = replay(settings, None, None, rebuild=True)
    assert summary.rebuilt is not None and live in summary.rebuilt.part_ids
    # Every part of the person, the live one and its anonymous part the stream never had, once each.
    parts = summary.rebuilt.part_ids
    assert summary.rebuilt.events_applied == sum(expected[p]["event_count"] for p in parts if p in expected)
    archived = read_valid_events(settings.archive_path)
    assert summary.replayed == sum(1 for e in archived if e.key not in summary.rebuilt.part_ids) > 0
    assert wait_for_profiles(store, expected, timeout=60) == expected
    assert store.get_profile(live)["event_count"] == len({d.event_id for d in deltas})


def test_rebuild_all_leaves_forgotten_people_alone(settings, redis_client):
    """A forgotten person's archived rows (not purged yet) and expired markers: --all does not bring
    them back (the forget rule leaves out their events up to the forget), nor does naming them."""
    catalog = publish_sample_catalog(redis_client)
    gap = settings.session_timeout_seconds * 1000
    events = [
        e for e in TrafficGenerator(catalog.categories, users=5, seed=22).events(120) if "event_id" in e
    ]
    write_archive(settings, [json.dumps(e).encode() for e in events])
    expected = ground_truth(events, catalog, gap)
    store = store_for(settings.redis_url, gap)
    deltas = [d for e in events if (d := check_record(json.dumps(e).encode(), catalog, SHIPPED_TRAITS).delta)]
    store.apply_deltas(deltas)
    forgotten = next(pid for pid, doc in expected.items() if doc["user_id"] and doc["anonymous_ids"])
    # forgotten after every event (the generator's clock runs ahead of now): all of them are forgotten
    store.forget(forgotten, at_ms=max(d.timestamp_ms for d in deltas) + 1)
    person = [forgotten, *(a for a in expected[forgotten]["anonymous_ids"] if a in expected)]
    for pid in person:  # their markers expired since
        redis_client.delete(*redis_client.keys(f"{profile_keys(pid).seen_prefix}*") or ["none"])

    report = rebuild_profiles(settings, all_profiles=True)
    assert set(person) <= set(report.forgotten_parts)
    others = {pid: doc for pid, doc in expected.items() if pid not in person}
    assert report.events_applied == sum(doc["event_count"] for doc in others.values())
    assert report.events_forgotten == len(
        {(d.profile_id, d.event_id) for d in deltas if d.profile_id in person}
    )
    assert all(store.get_profile(pid) is None for pid in person)
    assert wait_for_profiles(store, others, timeout=5) == others

    named = rebuild_profiles(settings, [forgotten])
    assert named.events_applied == 0 and forgotten in named.forgotten_parts
    assert store.get_profile(forgotten) is None
