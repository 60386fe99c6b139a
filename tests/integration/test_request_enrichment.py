"""Enrichment from the request and bots, end to end with real processes (API, profile app, archiver)."""

from __future__ import annotations

import json
import uuid

import duckdb
import httpx
import pytest

from core.archive_layout import archive_glob, has_archive
from enrichment.reference_store import GEO, ROW_IDS, publish_reference
from tests.integration.helpers import eventually, start_platform, store_for
from tests.integration.test_collector_api import read_topic
from tests.unit.test_request_enrichment import BINGBOT, GOOGLEBOT, SAFARI_IPHONE

pytestmark = pytest.mark.integration


def _event(user: str, **metadata: str) -> dict:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "page_view",
        "user_id": user,
        "timestamp": "2026-03-01T10:00:00Z",
        "metadata": {"url": "https://shop.example/", **metadata},
    }


def test_browser_events_are_enriched_bots_archived_not_profiled_and_server_sdks_exempt(
    settings, pulse_apps, redis_client
):
    publish_reference(
        redis_client,
        GEO,
        [
            {
                "start_ip": "198.51.100.0",
                "end_ip": "198.51.100.255",
                "country": "DE",
                "region": "BE",
                "city": "",
            }
        ],
        ROW_IDS[GEO],
    )
    settings = settings.model_copy(update={"trusted_proxies": ["127.0.0.1"]})
    base = start_platform(pulse_apps, settings)
    browser = {"Origin": "https://shop.example", "X-Forwarded-For": "203.0.113.1, 198.51.100.7"}
    crawler = _event("crawler-1")
    person = _event("person-1", utm_source="newsletter", utm_medium="email")
    server = _event("server-1")
    with httpx.Client(base_url=base, timeout=10) as http:
        for event, headers in (
            (crawler, {**browser, "User-Agent": GOOGLEBOT}),
            (person, {**browser, "User-Agent": SAFARI_IPHONE}),
            (server, {"X-Pulse-Key": "test-write", "User-Agent": BINGBOT}),
        ):
            answer = http.post("/v1/events", params={"key": "test-write"} if "Origin" in headers else {},
                               json=event, headers=headers)  # fmt: skip
            assert answer.status_code == 202 and answer.json()["accepted"] == 1, answer.text
        metrics = http.get("/metrics").text
    assert 'pulse_collector_bot_events_total{reason="user_agent"} 1.0' in metrics

    store = store_for(settings.redis_url, settings.session_timeout_seconds * 1000)
    assert eventually(lambda: store.get_profile("person-1") and store.get_profile("server-1"), 60)
    profile = store.get_profile("person-1")
    # X-Forwarded-For from the trusted proxy: the right-most untrusted hop, geo before truncation
    assert profile["last_geo"] == {"country": "DE", "region": "BE"}
    assert profile["last_device"]["type"] == "mobile" and profile["last_device"]["os"] == "iOS"
    assert profile["first_campaign"] == {"source": "newsletter", "medium": "email"}
    assert "last_geo" not in store.get_profile("server-1")  # the server's request told nothing

    records = {json.loads(m.value())["user_id"]: json.loads(m.value()) for m in read_topic(
        settings.kafka_brokers, settings.topic_events, 3)}  # fmt: skip
    assert records["crawler-1"]["metadata"]["ip"] == "198.51.100.0"  # truncated before Kafka
    assert records["crawler-1"]["metadata"]["context"]["bot"] is True
    assert "bot" not in records["server-1"].get("metadata", {}).get("context", {})

    def archived_bot() -> list:
        if not has_archive(settings.archive_path):
            return []
        with duckdb.connect() as con:
            return con.execute(
                "SELECT user_id, bot_reason, device_type FROM read_parquet($g, union_by_name = true) "
                "WHERE is_bot",
                {"g": archive_glob(settings.archive_path)},
            ).fetchall()

    assert eventually(lambda: bool(archived_bot()), 60)
    assert archived_bot() == [("crawler-1", "user_agent", "bot")]
    assert store.get_profile("crawler-1") is None  # archived and counted, never profiled
