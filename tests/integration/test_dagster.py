"""The Dagster code location: loads, and its assets run against real Redis, Parquet and DuckDB."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from quixstreams.sinks import SinkBatch

from assets import analyst_views, batch_tables, reconciliation, reconciliation_assets
from core.resources import PulseResource, RedisResource
from enrichment import assets as enrichment_assets
from enrichment.reference_store import current_version, load_catalog
from orchestration.definitions import defs
from orchestration.demo_traffic import TrafficGenerator
from streaming.archiver.rows import archive_row
from streaming.archiver.sink import ParquetArchiveSink
from streaming.profile_app.pipeline import check_record
from streaming.profiles.store import RedisProfileStore
from tests.integration.helpers import SHIPPED_TRAITS

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    assert {"product_catalog", "analyst_views", "profile_drift_report"} <= {
        k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()
    }
    assert repo.get_job("replay_job") and repo.get_job("rebuild_profiles_job")


def write_archive(settings, raws: list[bytes]) -> None:
    sink = ParquetArchiveSink(settings.archive_path)
    batch = SinkBatch(topic=settings.topic_events, partition=0)
    for offset, raw in enumerate(raws):
        batch.append(
            value=archive_row(raw, settings.topic_events, 0, offset, 1_700_000_000_000),
            key=None,
            timestamp=0,
            headers=[],
            offset=offset,
        )
    sink.write(batch)


def test_assets_materialize_and_drift_check_fails_on_drift(settings, redis_client):
    resources = {
        "redis": RedisResource(url=settings.redis_url),
        "pulse": PulseResource(
            data_dir=str(settings.data_path),
            redis_url=settings.redis_url,
            kafka_brokers=settings.kafka_brokers,
        ),
    }
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        dg.load_assets_from_modules([enrichment_assets]), resources=resources, instance=instance
    )
    assert result.success and current_version(redis_client, "catalog")
    catalog = load_catalog(redis_client)

    events = list(TrafficGenerator(catalog.categories, users=15, seed=2).events(400))
    raws = [json.dumps(e).encode() for e in events] + [b"not json"]
    write_archive(settings, raws)
    store = RedisProfileStore(
        redis_client, dedupe_window_seconds=3600, session_gap_ms=settings.session_timeout_seconds * 1000
    )
    # As the profile app does: with the traits it runs with (the shipped file, which reconcile reads too).
    checked = (check_record(r, catalog, SHIPPED_TRAITS) for r in raws)
    store.apply_deltas([c.delta for c in checked if c.delta])

    assets = [
        analyst_views.analyst_views,
        reconciliation_assets.profile_drift_report,
        reconciliation_assets.no_profile_drift,
    ]
    result = dg.materialize(
        [*assets, batch_tables.profiles_batch, batch_tables.sessions], resources=resources, instance=instance
    )
    assert result.success
    with duckdb.connect(str(settings.data_path / "pulse.duckdb"), read_only=True) as con:
        live_ids = set(reconciliation.live_profile_ids(redis_client))
        assert {r[0] for r in con.execute("SELECT profile_id FROM profiles_batch").fetchall()} == live_ids
        # The SQL sessionization agrees with the stream's interval merging, profile by profile.
        disagreements = con.execute(
            "SELECT count(*) FROM profiles_batch p "
            "LEFT JOIN (SELECT profile_id, count(*) AS n FROM sessions GROUP BY 1) s USING (profile_id) "
            "WHERE p.session_count IS DISTINCT FROM s.n"
        ).fetchone()[0]
        assert disagreements == 0
        # The traits are columns analysts can query, equal to the profile document's.
        rows = con.execute("SELECT computed, traits, profile FROM profiles_batch").fetchall()
        assert any(json.loads(computed) for computed, _, _ in rows)
        for computed, traits, profile in rows:
            document = json.loads(profile)
            assert (json.loads(computed), json.loads(traits)) == (document["computed"], document["traits"])
        # docs/analysts.md's query of the traits runs on it.
        traits_query = (ROOT / "docs" / "analysts.md").read_text().split("```sql")[2].split("```")[0]
        assert con.execute(traits_query).fetchall()
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["no_profile_drift"].passed
    with duckdb.connect(str(settings.data_path / "pulse.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM events_invalid").fetchone()[0] >= 1
        distinct = len(
            {
                (e.get("user_id") or e.get("anonymous_id"), e.get("event_id"))
                for e in events
                if check_record(json.dumps(e).encode(), catalog).delta
            }
        )
        assert con.execute("SELECT count(*) FROM events").fetchone()[0] == distinct

    some = sorted(p for p in redis_client.scan_iter(match="pulse:{*}:p"))[0]
    redis_client.hincrby(some, "t:page_view", 3)
    result = dg.materialize(assets[1:], resources=resources, instance=instance, raise_on_error=False)
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert not checks["no_profile_drift"].passed
    assert checks["no_profile_drift"].metadata["mismatched"].value == 1


def test_archive_day_quality_checks(settings):
    from datetime import UTC, datetime

    from quality import archive_assets
    from quality.archive_checks import measure_archive

    events = list(
        TrafficGenerator({"p1": "shoes"}, users=5, seed=3, start=datetime(2026, 3, 1, 10, tzinfo=UTC)).events(
            200
        )
    )
    raws = [json.dumps(e).encode() for e in events]
    write_archive(settings, raws)
    resources = {
        "pulse": PulseResource(
            data_dir=str(settings.data_path),
            redis_url=settings.redis_url,
            kafka_brokers=settings.kafka_brokers,
        )
    }
    result = dg.materialize(
        [archive_assets.archive_day_quality],
        partition_key="2026-03-01",
        resources=resources,
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["schema_matches_event_contract"].passed
    assert checks["duplicate_rate_below_10_percent"].passed  # the demo re-sends ~2%
    materialization = result.asset_materializations_for_node("archive_day_quality")[0]
    assert materialization.metadata["records"].value > 0

    # A row marked valid that breaks the contract (say, written by an old archiver) fails the Pandera check.
    bad = archive_row(json.dumps(events[0]).encode(), settings.topic_events, 1, 0, 0)
    bad.update(event_id="not-a-uuid", event_type="Bad Type")
    sink = ParquetArchiveSink(settings.archive_path)
    batch = SinkBatch(topic=settings.topic_events, partition=1)
    batch.append(value=bad, key=None, timestamp=0, headers=[], offset=0)
    sink.write(batch)
    quality = measure_archive(settings.archive_path, where="dt = '2026-03-01'")
    assert quality.schema_failures >= 2


def test_pipeline_health_checks(settings, redis_client):
    import time

    from assets import pipeline_health
    from streaming.profile_app.sink import HEARTBEAT_KEY

    resources = {
        "pulse": PulseResource(
            data_dir=str(settings.data_path),
            redis_url=settings.redis_url,
            kafka_brokers=settings.kafka_brokers,
        )
    }
    result = dg.materialize(
        [pipeline_health.pipeline_health], resources=resources, instance=dg.DagsterInstance.ephemeral()
    )
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"profile_app_alive": False, "archive_fresh": False}

    redis_client.set(HEARTBEAT_KEY, int(time.time() * 1000))
    write_archive(settings, [b"{}"])
    result = dg.materialize(
        [pipeline_health.pipeline_health], resources=resources, instance=dg.DagsterInstance.ephemeral()
    )
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"profile_app_alive": True, "archive_fresh": True}


def test_run_failure_sensor_posts_to_the_webhook(monkeypatch):
    import http.server
    import threading

    from orchestration.sensors import post_run_failures

    received: list[dict] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Hook)  # holds its port from the bind
    port = server.server_port
    threading.Thread(target=server.serve_forever, daemon=True).start()

    @dg.op
    def broken():
        raise RuntimeError("boom")

    @dg.job
    def failing_job():
        broken()

    instance = dg.DagsterInstance.ephemeral()
    result = failing_job.execute_in_process(instance=instance, raise_on_error=False)
    failure = next(e for e in result.all_events if e.event_type_value == "PIPELINE_FAILURE")
    context = dg.build_run_status_sensor_context(
        sensor_name="post_run_failures",
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=failure,
    ).for_run_failure()

    monkeypatch.delenv("PULSE_ALERT_WEBHOOK_URL", raising=False)
    assert isinstance(post_run_failures(context), dg.SkipReason)
    monkeypatch.setenv("PULSE_ALERT_WEBHOOK_URL", f"http://127.0.0.1:{port}/hook")
    post_run_failures(context)
    server.shutdown()
    assert len(received) == 1 and "failing_job" in received[0]["text"]


def test_malformed_catalog_fails_and_keeps_the_published_version(settings, redis_client, tmp_path):
    resources = {"redis": RedisResource(url=settings.redis_url)}
    instance = dg.DagsterInstance.ephemeral()
    assert dg.materialize(
        dg.load_assets_from_modules([enrichment_assets]), resources=resources, instance=instance
    ).success
    published = current_version(redis_client, "catalog")

    bad = tmp_path / "bad.csv"
    bad.write_text("product_id,category,price\np1,shoes,10\np1,books,-3\np2,,4\n")
    result = dg.materialize(
        dg.load_assets_from_modules([enrichment_assets]),
        resources=resources,
        instance=instance,
        run_config={"ops": {"product_catalog": {"config": {"path": str(bad)}}}},
        raise_on_error=False,
    )
    assert not result.success
    assert current_version(redis_client, "catalog") == published
    assert len(load_catalog(redis_client).categories) == 2000


def test_forget_job_purges_archive_rows_and_replay_suppresses(settings, redis_client):
    from assets.archive import read_valid_events
    from orchestration.jobs import forget_job

    events = list(TrafficGenerator({"p1": "shoes"}, users=6, seed=5).events(200))
    write_archive(settings, [json.dumps(e).encode() for e in events])
    victim = next(
        e.get("user_id") or e["anonymous_id"]
        for e in events
        if "event_id" in e and (e.get("user_id") or e.get("anonymous_id"))
    )
    store = RedisProfileStore(redis_client, dedupe_window_seconds=3600, session_gap_ms=1_800_000)
    forgotten_at = store.forget_person(victim).at_ms
    before = read_valid_events(settings.archive_path)
    doomed = [e for e in before if e.key == victim and e.event_time_ms <= forgotten_at]
    assert doomed

    resources = {
        "pulse": PulseResource(
            data_dir=str(settings.data_path),
            redis_url=settings.redis_url,
            kafka_brokers=settings.kafka_brokers,
        )
    }
    result = forget_job.execute_in_process(resources=resources, instance=dg.DagsterInstance.ephemeral())
    assert result.success
    after = read_valid_events(settings.archive_path)
    # Up to the forget time; the generator's clock may run past now: those events are a return.
    assert not any(e.key == victim and e.event_time_ms <= forgotten_at for e in after)
    assert len(after) == len(before) - len(doomed)
