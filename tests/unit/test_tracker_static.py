"""The tracker script, CORS, the ?key= write key and the demo routes, in process (no broker, no Redis)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from core.settings import PulseSettings
from quality.event_contract import CUSTOM_EVENT_TYPE_PATTERN, MAX_EVENT_BYTES
from streaming.api.app import create_app
from streaming.api.browser import STATIC, DemoShopError, banner_decisions, demo_catalog
from streaming.api.ingest import MAX_BATCH_EVENTS, MAX_BODY_BYTES

TRACKER = (STATIC / "tracker.js").read_text()
EVENT = {
    "event_id": "123e4567-e89b-42d3-a456-426614174000",
    "event_type": "page_view",
    "anonymous_id": "a-1",
    "timestamp": "2024-04-25T14:23:05.123Z",
}
BANNER = {
    "rule": "category_affinity",
    "action": "banner",
    "message": "New in shoes: picked for you",
    "params": {"category": "shoes", "internal": 1},
    "key": "shoes",
}


class FakeProducer:
    def __init__(self) -> None:
        self.records: list[Any] = []

    async def send(self, records: list[Any]) -> None:
        self.records.extend(records)

    def broker_reachable(self, timeout: float) -> bool:
        return True

    def close(self) -> None:
        pass


class FakeStore:
    def get_person(self, profile_id: str) -> None:
        return None

    def decisions_view(self, profile_id: str) -> None:
        return None

    def get_decisions(self, profile_id: str) -> list[dict[str, Any]]:
        return [
            BANNER,
            {"rule": "cart_saver", "action": "offer", "message": "10% off", "offer": {"code": "SAVE10"}},
        ]


def client(**overrides: Any) -> TestClient:
    settings = PulseSettings(**{"write_keys": "w", "read_keys": "r", **overrides})
    return TestClient(create_app(settings, producer=FakeProducer(), store=FakeStore()))  # type: ignore[arg-type]


def test_tracker_limits_match_the_contract_and_collector():
    js_pattern = re.search(r"var EVENT_TYPE = /(.+)/;", TRACKER).group(1)
    assert js_pattern == CUSTOM_EVENT_TYPE_PATTERN
    assert f"var MAX_BATCH_EVENTS = {MAX_BATCH_EVENTS};" in TRACKER
    max_event = int(re.search(r"var MAX_EVENT_BYTES = (\d+);", TRACKER).group(1))
    max_request = int(re.search(r"var MAX_REQUEST_BYTES = (\d+);", TRACKER).group(1))
    assert max_event <= MAX_EVENT_BYTES
    assert max_request <= min(MAX_BODY_BYTES, 64 * 1024)


def test_tracker_is_dependency_free():
    assert not re.search(r"\b(import|require)\s*\(|^import |https?://", TRACKER, re.MULTILINE)
    for name in (
        "init",
        "page",
        "track",
        "identify",
        "flush",
        "sendBeacon",
        "localStorage",
        "randomUUID",
        "getRandomValues",
    ):
        assert name in TRACKER


def test_tracker_is_served_as_javascript():
    with client() as c:
        response = c.get("/v1/tracker.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert "max-age" in response.headers["cache-control"]
    assert response.text == TRACKER


def test_write_key_in_query_is_accepted_for_events_only():
    with client() as c:
        # What the tracker sends: the key in the URL, a text/plain body (no CORS preflight).
        ok = c.post(
            "/v1/events?key=w",
            content=json.dumps({"events": [EVENT]}),
            headers={"Content-Type": "text/plain;charset=UTF-8"},
        )
        assert ok.status_code == 202 and ok.json() == {"accepted": 1, "rejected": []}
        assert c.post("/v1/events?key=r", json=EVENT).status_code == 403
        assert c.post("/v1/events?key=nope", json=EVENT).status_code == 401
        assert c.get("/v1/profiles/a-1?key=r").status_code == 401
        assert c.get("/v1/decisions/a-1?key=r").status_code == 401
        assert c.delete("/v1/profiles/a-1?key=r").status_code == 401


def test_cors_only_for_configured_origins_and_only_on_collector_paths():
    origin = "https://shop.example"
    with client(cors_origins=f"{origin}, https://other.example") as c:
        sent = c.post("/v1/events?key=w", json=EVENT, headers={"Origin": origin})
        assert sent.headers["access-control-allow-origin"] == origin
        preflight = c.options(
            "/v1/events",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "x-pulse-key, content-type",
            },
        )
        assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == origin
        stranger = c.post("/v1/events?key=w", json=EVENT, headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in stranger.headers
        read = c.get("/v1/decisions/a-1", headers={"Origin": origin, "X-Pulse-Key": "r"})
        assert "access-control-allow-origin" not in read.headers
    with client() as c:
        assert (
            "access-control-allow-origin"
            not in c.post("/v1/events?key=w", json=EVENT, headers={"Origin": origin}).headers
        )


def test_dev_mode_allows_the_api_origin():
    with client(write_keys="", read_keys="", dev_mode=True, api_port=8123) as c:
        response = c.post(
            "/v1/events?key=dev-write-key", json=EVENT, headers={"Origin": "http://localhost:8123"}
        )
    assert response.headers["access-control-allow-origin"] == "http://localhost:8123"


def test_demo_shop_is_mounted_only_when_enabled():
    with client() as c:
        assert c.get("/demo").status_code == 404
        assert c.get("/demo/decisions/a-1").status_code == 404
    with client(write_keys="", read_keys="", dev_mode=True) as c:
        assert c.get("/demo").status_code == 200
    with client(demo_shop=True) as c:
        page = c.get("/demo")
        assert page.status_code == 200 and '{"writeKey": "w"}' in page.text and "/v1/tracker.js" in page.text
        assert c.get("/demo/static/demo.js").status_code == 200
        assert c.get("/demo/static/tracker.js").status_code == 404
        assert c.get("/demo/catalog").json()["categories"] == demo_catalog()
        assert c.get("/demo/decisions/a-1").json() == {
            "profile_id": "a-1",
            "decisions": banner_decisions([BANNER]),
        }


def test_demo_shop_needs_a_write_key():
    with pytest.raises(DemoShopError):
        client(write_keys="", demo_shop=True)


def test_demo_page_escapes_its_configuration():
    with client(write_keys="</script><script>alert(1)</script>", demo_shop=True) as c:
        page = c.get("/demo").text
    assert "</script><script>alert(1)" not in page and "\\u003c/script>" in page


def test_demo_catalog_groups_a_few_products_per_category():
    catalog = demo_catalog()
    assert len(catalog) >= 5 and sum(len(products) for products in catalog.values()) >= 24
    for category, products in catalog.items():
        assert all(p["category"] == category and p["product_id"] and p["name"] for p in products)


def test_banner_decisions_expose_only_what_a_banner_shows():
    assert banner_decisions([BANNER, {"action": "offer"}]) == [
        {
            "rule": "category_affinity",
            "action": "banner",
            "message": "New in shoes: picked for you",
            "params": {"category": "shoes"},
        }
    ]
