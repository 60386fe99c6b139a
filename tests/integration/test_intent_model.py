"""The intent model: trained in Dagster on archived sessions, published, and scored by the stream."""

from __future__ import annotations

import json

import dagster as dg
import pytest
import redis

from assets import analyst_views, batch_tables, intent_model
from core.resources import PulseResource
from enrichment.catalog import SAMPLE_CATALOG, Catalog, categories_from_rows, read_catalog_csv
from orchestration.demo_traffic import TrafficGenerator
from streaming.profile_app.pipeline import check_record
from streaming.profiles.intent_store import IntentModelFollower, load_intent_model
from streaming.profiles.store import RedisProfileStore
from tests.integration.test_dagster import write_archive

pytestmark = pytest.mark.integration


def test_intent_model_trains_on_archived_sessions_publishes_and_the_stream_scores_with_it(
    settings, redis_client
):
    catalog = Catalog("sample", categories_from_rows(read_catalog_csv(SAMPLE_CATALOG)))
    raws = [
        json.dumps(e).encode() for e in TrafficGenerator(catalog.categories, users=150, seed=4).events(6000)
    ]
    write_archive(settings, raws)
    resources = {
        "pulse": PulseResource(
            data_dir=str(settings.data_path),
            redis_url=settings.redis_url,
            kafka_brokers=settings.kafka_brokers,
        )
    }
    result = dg.materialize(
        [analyst_views.analyst_views, batch_tables.sessions, intent_model.intent_model],
        resources=resources,
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    metadata = result.asset_materializations_for_node("intent_model")[0].metadata
    (check,) = result.get_asset_check_evaluations()
    assert check.passed, metadata
    assert metadata["sessions"].value > 100 and metadata["roc_auc"].value >= 0.6
    model = load_intent_model(redis_client)
    assert model is not None and metadata["published_version"].value == model.version

    # The profile app's store scores every update with the published model.
    store = RedisProfileStore(
        redis_client,
        dedupe_window_seconds=3600,
        session_gap_ms=1_800_000,
        intent_model=IntentModelFollower(redis_client, refresh_seconds=0).current,
    )
    store.apply_deltas([c.delta for c in (check_record(r, catalog) for r in raws[:500]) if c.delta])
    scores = {
        store.get_profile(pid)["intent_score"]
        for pid in {c.delta.profile_id for c in (check_record(r, catalog) for r in raws[:500]) if c.delta}
    }
    assert len(scores) > 5 and all(0.0 < s < 1.0 for s in scores)


def test_too_few_sessions_fail_with_a_clear_message(settings, redis_client):
    catalog = Catalog("sample", categories_from_rows(read_catalog_csv(SAMPLE_CATALOG)))
    write_archive(
        settings,
        [json.dumps(e).encode() for e in TrafficGenerator(catalog.categories, users=3, seed=1).events(20)],
    )
    resources = {
        "pulse": PulseResource(
            data_dir=str(settings.data_path),
            redis_url=settings.redis_url,
            kafka_brokers=settings.kafka_brokers,
        )
    }
    result = dg.materialize(
        [analyst_views.analyst_views, batch_tables.sessions, intent_model.intent_model],
        resources=resources,
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "cannot train the intent model" in str(failure.event_specific_data.error)
    assert load_intent_model(redis_client) is None


def test_the_model_follower_primes_at_start_up_and_fails_loudly_without_redis(redis_client):
    from streaming.profiles.intent import IntentModel
    from streaming.profiles.intent_store import MODEL_POINTER, publish_intent_model

    redis_client.delete(MODEL_POINTER)
    follower = IntentModelFollower(redis_client, refresh_seconds=60)
    assert follower.current() is None
    model = IntentModel(-3.0, (0.2, 0.3, 1.1, -0.5, 0.1, 0.1, 0.2), {"note": 0.0})
    publish_intent_model(redis_client, model)
    assert follower.current() is None  # current() waits for refresh_seconds
    assert follower.prime().version == model.version  # prime() reads now
    with pytest.raises(redis.ConnectionError):
        IntentModelFollower(redis.Redis(port=1, socket_connect_timeout=1)).prime()
