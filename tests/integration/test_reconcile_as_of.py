"""`pulse reconcile --as-of`: the archive and the live profiles compared as of a broker time, real
Parquet archive and real Redis; profiles with records received from then on are left out."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from quixstreams.sinks import SinkBatch

from assets.batch_runs import AsOfInFuture, reconcile
from orchestration.cli import cli
from orchestration.demo_traffic import TrafficGenerator
from streaming.archiver.rows import archive_row
from streaming.archiver.sink import ParquetArchiveSink
from streaming.profile_app.pipeline import check_record
from streaming.profiles.keys import fields_key
from streaming.profiles.store import RedisProfileStore
from tests.integration.helpers import SHIPPED_TRAITS, publish_sample_catalog

T0 = datetime(2026, 12, 1, 12, tzinfo=UTC)


def _archive(settings, raws: list[bytes], first_offset: int, received: datetime) -> None:
    batch = SinkBatch(topic=settings.topic_events, partition=0)
    for i, raw in enumerate(raws):
        row = archive_row(raw, settings.topic_events, 0, first_offset + i, int(received.timestamp() * 1000))
        batch.append(value=row, key=None, timestamp=0, headers=[], offset=first_offset + i)
    ParquetArchiveSink(settings.archive_path).write(batch)


def _profile_of(event: dict) -> str:
    return event.get("user_id") or event["anonymous_id"]


def test_reconcile_as_of_a_time_leaves_out_what_came_later(settings, redis_client):
    catalog = publish_sample_catalog(redis_client)  # what reconcile reads categories from
    events = [e for e in TrafficGenerator(catalog.categories, users=6, seed=4).events(240) if "event_id" in e]
    early, late = events[:160], events[160:]
    late_people = {_profile_of(e) for e in late}
    early_only = {_profile_of(e) for e in early} - late_people
    assert early_only and late_people
    _archive(settings, [json.dumps(e).encode() for e in early], 0, T0)
    _archive(settings, [json.dumps(e).encode() for e in late], len(early), T0 + timedelta(hours=1))
    store = RedisProfileStore(
        redis_client, dedupe_window_seconds=3600, session_gap_ms=settings.session_timeout_seconds * 1000
    )
    deltas = [check_record(json.dumps(e).encode(), catalog, SHIPPED_TRAITS).delta for e in events]
    store.apply_deltas([d for d in deltas if d])
    as_of = T0 + timedelta(minutes=30)

    clean = reconcile(settings, as_of=as_of)
    assert not clean.drifted
    assert clean.in_flight == len(late_people)
    assert clean.profiles_checked == len(early_only)
    assert not reconcile(settings).drifted  # no commits, no --as-of: the whole archive

    # Drift on a profile untouched since the as-of time is found; on one touched later it is
    # left out of the as-of run (the whole-archive run finds it).
    redis_client.hincrby(fields_key(sorted(early_only)[0]), "t:page_view", 1)
    assert reconcile(settings, as_of=as_of).mismatched == 1
    redis_client.hincrby(fields_key(sorted(early_only)[0]), "t:page_view", -1)
    redis_client.hincrby(fields_key(sorted(late_people)[0]), "t:page_view", 1)
    assert not reconcile(settings, as_of=as_of).drifted
    assert reconcile(settings).mismatched == 1


def test_an_as_of_in_the_future_is_refused(settings, redis_client, monkeypatch):
    with pytest.raises(AsOfInFuture):
        reconcile(settings, as_of=datetime.now(UTC) + timedelta(days=1))
    for name, value in {
        "PULSE_DATA_DIR": str(settings.data_dir),
        "PULSE_REDIS_URL": settings.redis_url,
        "PULSE_KAFKA_BROKERS": settings.kafka_brokers,
    }.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(cli, ["reconcile", "--as-of", "2999-01-01"])
    assert result.exit_code == 2 and "in the future" in result.output
    result = CliRunner().invoke(cli, ["reconcile", "--as-of", "yesterday"])
    assert result.exit_code == 2 and "ISO 8601" in result.output
