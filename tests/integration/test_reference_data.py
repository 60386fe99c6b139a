"""Geo and campaign reference data through Dagster into real Redis; stream health and its
sensor on a real broker.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition

from assets import pipeline_health
from core.resources import PulseResource, RedisResource
from enrichment import assets as enrichment_assets
from enrichment.context import enrich_context
from enrichment.reference_publish import GEO_SPEC, SPECS, publish_missing_samples
from enrichment.reference_store import CAMPAIGNS, GEO, GeoFollower, current_version, load_campaigns, load_geo
from orchestration.local_services import free_port
from orchestration.sensors import stream_health_sensor

pytestmark = pytest.mark.integration

REFERENCE_DIR = GEO_SPEC.sample.parent


def _materialize(
    redis_url: str,
    instance: dg.DagsterInstance,
    run_config: dict | None = None,
    selection: list | None = None,
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        selection or [enrichment_assets.geo_ranges, enrichment_assets.campaigns],
        resources={"redis": RedisResource(url=redis_url)},
        instance=instance,
        run_config=run_config,
        raise_on_error=False,
    )


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {c.asset_key.to_user_string(): c for c in result.get_asset_check_evaluations()}


def test_geo_and_campaigns_publish_with_row_counts(settings, redis_client):
    result = _materialize(settings.redis_url, dg.DagsterInstance.ephemeral())
    assert result.success
    checks = _checks(result)
    assert checks["geo_ranges"].passed and checks["campaigns"].passed
    assert (
        checks["geo_ranges"].metadata["rows"].value > 6000
        and checks["geo_ranges"].metadata["rejects"].value == 0
    )
    geo_meta = result.asset_materializations_for_node("geo_ranges")[0].metadata
    assert geo_meta["ipv4_ranges"].value > 3000 and geo_meta["ipv6_ranges"].value > 1000
    assert result.asset_materializations_for_node("campaigns")[0].metadata["fallback_rows"].value > 0

    geo, campaigns = load_geo(redis_client), load_campaigns(redis_client)
    assert geo.version == current_version(redis_client, GEO) and len(geo) == geo_meta["rows"].value
    assert campaigns.version == current_version(redis_client, CAMPAIGNS)
    context = enrich_context(
        {"ip": "2001:db8:2::1", "utm_source": "GOOGLE", "utm_medium": "cpc", "utm_campaign": "nothing_known"},
        geo=geo,
        campaigns=campaigns,
    )
    assert context["geo"]["city"] == "São Paulo"
    assert (
        context["campaign"]["campaign_id"] == "cmp_google_cpc_other"
        and context["campaign"]["match"] == "source_medium"
    )


@pytest.mark.parametrize(
    ("asset", "bad_text"),
    [
        (
            "geo_ranges",
            "start_ip,end_ip,country,region,city\n192.0.2.0,192.0.2.255,US,A,B\n192.0.2.100,192.0.2.200,US,A,B\nnot-an-ip,192.0.2.1,US,A,B\n",
        ),
        (
            "campaigns",
            (
                "utm_source,utm_medium,utm_campaign,campaign_id,name,channel\n"
                "google,cpc,x,c1,X,paid_search\nGoogle,CPC,X,c2,X again,paid_search\n"
            ),
        ),
    ],
)
def test_malformed_file_fails_its_check_and_keeps_the_published_version(
    settings, redis_client, tmp_path, asset, bad_text
):
    instance = dg.DagsterInstance.ephemeral()
    assert _materialize(settings.redis_url, instance).success
    dataset = {"geo_ranges": GEO, "campaigns": CAMPAIGNS}[asset]
    published = current_version(redis_client, dataset)
    before = len(load_geo(redis_client)) if dataset == GEO else len(load_campaigns(redis_client))

    bad = tmp_path / "bad.csv"
    bad.write_text(bad_text)
    node = getattr(enrichment_assets, asset)
    result = _materialize(
        settings.redis_url, instance, {"ops": {asset: {"config": {"source": str(bad)}}}}, [node]
    )
    assert not result.success
    check = _checks(result)[asset]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert check.metadata["rejects"].value >= 2 and "line" in check.metadata["failures"].value
    assert current_version(redis_client, dataset) == published
    after = len(load_geo(redis_client)) if dataset == GEO else len(load_campaigns(redis_client))
    assert after == before


@pytest.fixture
def reference_server(tmp_path: Path) -> Iterator[str]:
    """A local HTTP server serving a copy of data/reference/."""
    root = tmp_path / "served"
    shutil.copytree(REFERENCE_DIR, root, ignore=shutil.ignore_patterns("*.py"))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)  # holds its port from the bind
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_reference_data_from_a_url(settings, redis_client, reference_server):
    instance = dg.DagsterInstance.ephemeral()
    config = {
        "ops": {
            "geo_ranges": {"config": {"source": f"{reference_server}/geo_ranges.csv"}},
            "campaigns": {"config": {"source": f"{reference_server}/campaigns.csv"}},
        }
    }
    result = _materialize(settings.redis_url, instance, config)
    assert result.success
    assert (
        result.asset_materializations_for_node("geo_ranges")[0]
        .metadata["source"]
        .value.startswith(reference_server)
    )
    published = current_version(redis_client, GEO)
    assert load_geo(redis_client).lookup("192.0.2.200")["city"] == "New York"

    missing = _materialize(
        settings.redis_url,
        instance,
        {"ops": {"geo_ranges": {"config": {"source": f"{reference_server}/nope.csv"}}}},
        [enrichment_assets.geo_ranges],
    )
    assert not missing.success and not _checks(missing)["geo_ranges"].passed
    assert current_version(redis_client, GEO) == published


def test_geo_follower_switches_to_a_new_version_without_restart(settings, redis_client, tmp_path):
    now = [0.0]
    follower = GeoFollower(redis_client, refresh_seconds=5, clock=lambda: now[0])
    assert len(follower.current()) == 0  # nothing published yet: an empty index, not an error
    instance = dg.DagsterInstance.ephemeral()
    assert _materialize(settings.redis_url, instance, selection=[enrichment_assets.geo_ranges]).success
    now[0] += 5
    first = follower.current()
    assert first.lookup("198.51.100.1")["city"] == "Berlin"

    moved = tmp_path / "geo.csv"
    moved.write_text(
        GEO_SPEC.sample.read_text().replace(
            "198.51.100.255,DE,Berlin,Berlin", "198.51.100.255,AT,Vienna,Vienna"
        )
    )
    assert _materialize(
        settings.redis_url,
        instance,
        {"ops": {"geo_ranges": {"config": {"source": str(moved)}}}},
        [enrichment_assets.geo_ranges],
    ).success
    assert follower.current() is first  # not yet: checked at most every refresh_seconds
    now[0] += 5
    second = follower.current()
    assert second.version != first.version and second.lookup("198.51.100.1")["city"] == "Vienna"
    assert (
        first.lookup("198.51.100.1")["city"] == "Berlin"
    )  # a reader holding the old version keeps a whole one


def test_prime_reads_the_live_version_now_and_fails_loudly_without_redis(settings, redis_client):
    """The profile app primes its followers before its first event (see ReferenceFollower.prime)."""
    now = [0.0]
    follower = GeoFollower(redis_client, refresh_seconds=5, clock=lambda: now[0])
    assert len(follower.current()) == 0
    assert _materialize(
        settings.redis_url, dg.DagsterInstance.ephemeral(), selection=[enrichment_assets.geo_ranges]
    ).success
    assert len(follower.current()) == 0  # current() waits for refresh_seconds
    assert follower.prime().lookup("198.51.100.1")["city"] == "Berlin"  # prime() reads now
    unreachable = GeoFollower(redis.Redis(port=1, socket_connect_timeout=1), refresh_seconds=5)
    with pytest.raises(redis.ConnectionError):
        unreachable.prime()
    assert len(unreachable.current()) == 0  # current() keeps what it has, as before


def test_pulse_up_publishes_every_missing_sample_once(redis_client):
    published = publish_missing_samples(redis_client)
    assert sorted(p.split()[0] for p in published) == sorted(SPECS)
    assert publish_missing_samples(redis_client) == []


# --- stream health -------------------------------------------------------------------


def _produce(brokers: str, topic: str, per_partition: dict[int, int], timestamp_ms: int) -> None:
    # linger.ms batches many records per request: the case where Tansu's ListOffsets is wrong.
    producer = Producer(
        {
            "bootstrap.servers": brokers,
            "linger.ms": 20,
            "acks": "all",
            "enable.idempotence": True,
            "compression.type": "lz4",
        }
    )
    for partition, count in per_partition.items():
        for i in range(count):
            producer.produce(
                topic, value=b'{"x": %d}' % i, key=b"k", partition=partition, timestamp=timestamp_ms
            )
    assert producer.flush(30) == 0


def _commit(brokers: str, group: str, topic: str, offsets: dict[int, int]) -> None:
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": group, "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, o) for p, o in offsets.items()])
    consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False)
    consumer.close()


@pytest.fixture
def pulse_resource(settings, monkeypatch) -> PulseResource:
    for name in ("topic_events", "topic_dlq", "consumer_group", "archiver_consumer_group"):
        monkeypatch.setenv(f"PULSE_{name.upper()}", getattr(settings, name))
    return PulseResource(
        data_dir=str(settings.data_path), redis_url=settings.redis_url, kafka_brokers=settings.kafka_brokers
    )


def test_stream_health_checks_and_sensor(settings, pulse_resource):
    brokers, events = settings.kafka_brokers, settings.topic_events
    now_ms = int(time.time() * 1000)
    _produce(brokers, events, {0: 20, 1: 20, 2: 20}, now_ms - 600_000)  # ten minutes old
    _produce(brokers, events, {0: 20, 1: 20, 2: 20}, now_ms)
    _produce(brokers, settings.topic_dlq, {0: 10}, now_ms)
    _commit(
        brokers, settings.consumer_group, events, {0: 10, 1: 40, 2: 40}
    )  # partition 0 holds old unapplied events
    _commit(brokers, settings.archiver_consumer_group, events, {0: 40, 1: 40, 2: 40})

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [pipeline_health.stream_health],
        resources={"pulse": pulse_resource},
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success  # profiles_fresh blocks: the run fails, so post_run_failures posts it
    assert result.asset_materializations_for_node("stream_health")  # the measurement is still recorded
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert (
        not checks["profiles_fresh"].passed
        and checks["profiles_fresh"].metadata["events_not_applied"].value == 30
    )
    assert checks["profiles_fresh"].metadata["staleness_s"].value >= 590
    assert not checks["consumer_lag"].passed and checks["consumer_lag"].severity == dg.AssetCheckSeverity.WARN
    assert checks["consumer_lag"].metadata["archiver_messages"].value == 0
    dlq = checks["dlq_rate"].metadata
    assert not checks["dlq_rate"].passed
    assert (dlq["basis"].value, dlq["events"].value, dlq["dead_letters"].value) == (
        "retained topics",
        120,
        10,
    )

    # The sensor asks for a stream_health run naming the failing checks; its cursor keeps the offsets.
    context = dg.build_sensor_context(instance=instance, resources={"pulse": pulse_resource})
    request = stream_health_sensor(context)
    assert isinstance(request, dg.RunRequest)
    assert (
        request.run_key.startswith("profiles_fresh+consumer_lag+dlq_rate@")
        and request.tags["pulse/health"] == "profiles_fresh,consumer_lag,dlq_rate"
    )
    cursor = context.cursor
    assert cursor

    # Caught up, 90 new events and no new dead letters: healthy, and the rate covers only the new records.
    _produce(brokers, events, {0: 30, 1: 30, 2: 30}, int(time.time() * 1000))
    for group in (settings.consumer_group, settings.archiver_consumer_group):
        _commit(brokers, group, events, {0: 70, 1: 70, 2: 70})
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"pulse": pulse_resource})
    skip = stream_health_sensor(context)
    assert isinstance(skip, dg.SkipReason) and skip.skip_message.startswith("healthy")
    assert "0 dead letters / 90 events (since previous measurement)" in skip.skip_message

    result = dg.materialize(
        [pipeline_health.stream_health], resources={"pulse": pulse_resource}, instance=instance
    )
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert all(c.passed for c in checks.values()), {n: c.metadata for n, c in checks.items()}
    assert checks["dlq_rate"].metadata["basis"].value == "since previous measurement"
    assert checks["dlq_rate"].metadata["events"].value == 90


def test_stream_health_sensor_requests_a_run_when_the_broker_is_down(settings, monkeypatch):
    from orchestration import sensors

    monkeypatch.setattr(sensors, "PROBE_TIMEOUT_SECONDS", 2.0)
    down = PulseResource(
        data_dir=str(settings.data_path),
        redis_url=settings.redis_url,
        kafka_brokers=f"127.0.0.1:{free_port()}",
    )
    request = stream_health_sensor(dg.build_sensor_context(resources={"pulse": down}))
    assert isinstance(request, dg.RunRequest) and request.run_key.startswith("broker_unavailable@")
