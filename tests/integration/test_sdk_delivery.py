"""The Python SDK against the real collector and profile app: outages lose and duplicate nothing."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from enrichment.catalog import SAMPLE_CATALOG, Catalog, categories_from_rows, read_catalog_csv
from enrichment.reference_store import CATALOG, publish_reference
from orchestration.demo_traffic import TrafficGenerator
from orchestration.local_services import free_port
from orchestration.platform import pulse_app_process, settings_process_env
from pulse_sdk import PulseClient
from quality.event_contract import EventContractError, validate_event
from tests.integration.helpers import ground_truth, live_profiles, store_for

pytestmark = pytest.mark.integration

FAST_RETRIES = {"backoff_base": 0.05, "max_backoff": 0.5, "register_atexit": False}


@pytest.fixture
def catalog(redis_client) -> Catalog:
    rows = read_catalog_csv(SAMPLE_CATALOG)
    version = publish_reference(redis_client, CATALOG, rows, "product_id")
    return Catalog(version, categories_from_rows(rows))


def traffic(catalog: Catalog, total: int, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Valid generated events (with the generator's own ~2% duplicates), and invalid ones that carry an id."""
    valid, invalid = [], []
    for event in TrafficGenerator(catalog.categories, users=25, seed=seed).events(total):
        try:
            validate_event(event)
            valid.append(event)
        except EventContractError:
            if "event_id" in event:  # without one the SDK would assign it, which is its job
                invalid.append(event)
    return valid, invalid


def send(client: PulseClient, event: dict[str, Any]) -> str:
    return client.track(
        event["event_type"],
        user_id=event.get("user_id"),
        anonymous_id=event.get("anonymous_id"),
        metadata=event.get("metadata"),
        timestamp=event["timestamp"],
        event_id=event["event_id"],
    )


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def assert_profiles_count_each_event_once(settings, catalog: Catalog, sent: list[dict[str, Any]]) -> None:
    """Live profiles equal a batch recompute of the distinct events (derived fields aside, as reconciled)."""
    gap = settings.session_timeout_seconds * 1000
    expected = ground_truth(sent, catalog, gap)
    assert sum(doc["event_count"] for doc in expected.values()) == len({e["event_id"] for e in sent})
    store = store_for(settings.redis_url, gap)
    deadline = time.monotonic() + 90
    while True:
        live = live_profiles(store, expected)
        if live == expected or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    diffs = {
        pid: {
            k: (live[pid] or {}).get(k) for k in expected[pid] if (live[pid] or {}).get(k) != expected[pid][k]
        }
        for pid in expected
        if live[pid] != expected[pid]
    }
    assert not diffs, f"{len(diffs)} profiles differ: {diffs}"


def test_collector_down_then_503_then_healthy_loses_and_duplicates_nothing(
    settings, pulse_apps, catalog, tmp_path
):
    pulse_apps("profile-app")
    base = f"http://{settings.api_host}:{settings.api_port}"
    valid, invalid = traffic(catalog, 600, seed=11)
    assert len(valid) > 500 and invalid
    first, second, third = valid[:200], valid[200:400], valid[400:]
    client = PulseClient(base, "test-write", batch_size=50, flush_interval=0.1, **FAST_RETRIES)

    # 1. Nothing listens on the collector's port: connection refused.
    for event in first:
        send(client, event)
    for event in invalid:
        with pytest.raises(ValueError):
            send(client, event)
    wait_until(lambda: "ConnectError" in (client.stats.last_error or ""), 30, "connection errors")

    # 2. A collector whose broker is unreachable answers 503.
    dead = settings.model_copy(
        update={"kafka_brokers": f"127.0.0.1:{free_port()}", "delivery_timeout_ms": 1500}
    )
    broken = pulse_app_process("api", settings_process_env(dead), tmp_path / "logs-broken")
    broken.start()
    try:
        broken.wait_for_port(settings.api_host, settings.api_port, timeout=60)
        for event in second:
            send(client, event)
        wait_until(lambda: "HTTP 503" in (client.stats.last_error or ""), 60, "503 answers")
    finally:
        broken.stop()
    assert client.stats.delivered == 0

    # 3. A healthy collector on the same port; the application also re-sends some events by id.
    pulse_apps("api")
    resent = first[:30] + second[50:80]
    for event in third + resent:
        send(client, event)
    assert client.flush(timeout=180), client.stats
    client.close()

    stats = client.stats
    sent = first + second + third + resent
    assert stats.enqueued == len(sent)
    assert stats.delivered == len(sent)  # every event acknowledged by a 202 ...
    assert (stats.rejected, stats.dropped, stats.spooled) == (0, 0, 0)
    assert stats.retries > 0
    assert_profiles_count_each_event_once(settings, catalog, sent)  # ... and each counted once


def test_spooled_events_survive_a_restart_and_are_delivered_by_the_next_client(
    settings, pulse_apps, catalog, tmp_path
):
    spool_dir = tmp_path / "spool"
    base = f"http://{settings.api_host}:{settings.api_port}"
    valid, _ = traffic(catalog, 300, seed=12)

    # The collector is down for the whole life of the first client.
    first = PulseClient(base, "test-write", spool_dir=spool_dir, shutdown_timeout=1.0, **FAST_RETRIES)
    for event in valid:
        send(first, event)
    first.close()
    assert first.stats.spooled == len(valid) and first.stats.delivered == 0
    assert list(spool_dir.glob("*.jsonl"))

    pulse_apps("profile-app")
    pulse_apps("api")
    with PulseClient(base, "test-write", spool_dir=spool_dir, **FAST_RETRIES) as second:
        assert second.flush(timeout=120)
        assert second.stats.enqueued == 0
    assert not list(spool_dir.glob("*.jsonl"))
    assert_profiles_count_each_event_once(settings, catalog, valid)
