"""The real Segment and RudderStack Python SDKs send to Pulse by changing only their host."""

from __future__ import annotations

import time

import httpx
import pytest
from rudderstack.analytics.client import Client as RudderClient
from segment.analytics.client import Client as SegmentClient

from tests.integration.helpers import store_for, wait_for_profiles

pytestmark = pytest.mark.integration


def shop_session(client, prefix: str) -> None:
    anon, user = f"{prefix}-anon", f"{prefix}-user"
    for _ in range(3):
        client.page(anonymous_id=anon, category="shoes", name="Shoes", properties={"product_id": "p1"})
    client.track(anonymous_id=anon, event="Product Added", properties={"product_id": "p1", "quantity": 2, "price": 10.0})
    client.identify(user_id=user, anonymous_id=anon, traits={"plan": "pro"})
    client.track(user_id=user, anonymous_id=anon, event="Order Completed", properties={"order_id": "o1", "revenue": 25.0, "product_id": "p1", "quantity": 1})
    client.alias(previous_id=f"{prefix}-old", user_id=user)
    for _ in range(2):  # a re-sent message (same messageId) counts once
        client.track(user_id=user, event="Product Viewed", properties={"product_id": "p2"}, message_id=f"{prefix}-fixed-1")
    client.flush()


def expected(prefix: str) -> dict[str, dict]:
    return {
        f"{prefix}-anon": {"event_count": 4, "category_views": {"shoes": 3}, "cart": {"p1": 2}},
        f"{prefix}-user": {
            "event_count": 4,
            "counts_by_type": {"identify": 2, "product_viewed": 1, "purchase": 1},
            "purchase_total": 25.0,
            "anonymous_ids": [f"{prefix}-anon", f"{prefix}-old"],
        },
    }


@pytest.mark.parametrize("sdk", ["segment", "rudderstack"])
def test_sdk_traffic_gives_exact_profiles(settings, pulse_apps, sdk):
    pulse_apps("profile-app")
    pulse_apps("api")
    base = f"http://{settings.api_host}:{settings.api_port}"
    errors: list = []
    make = SegmentClient if sdk == "segment" else RudderClient
    client = make(write_key="test-write", host=base, gzip=True, sync_mode=True, on_error=lambda error, _batch: errors.append(error))
    shop_session(client, sdk)
    assert not errors, errors

    store = store_for(settings.redis_url, settings.session_timeout_seconds * 1000)
    want = expected(sdk)

    deadline = time.monotonic() + 30
    while True:
        live = {pid: store.get_profile(pid) for pid in want}
        got = {pid: {k: doc[k] for k in want[pid]} if doc else None for pid, doc in live.items()}
        if got == want or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert got == want


def test_segment_endpoints_reject_per_message_and_check_keys(settings, pulse_apps):
    pulse_apps("api")
    base = f"http://{settings.api_host}:{settings.api_port}"
    batch = {"batch": [
        {"type": "track", "event": "X", "messageId": "m1", "userId": "u", "timestamp": "2024-04-25T11:00:00Z"},
        {"type": "group", "messageId": "m2", "userId": "u", "groupId": "g"},
    ], "sentAt": "2024-04-25T11:00:01Z"}
    response = httpx.post(f"{base}/v1/batch", json=batch, auth=("test-write", ""))
    assert response.status_code == 200
    assert response.json()["accepted"] == 1
    assert "group" in response.json()["rejected"][0]["error"]
    assert httpx.post(f"{base}/v1/batch", json=batch).status_code == 401
    assert httpx.post(f"{base}/v1/batch", json={**batch, "writeKey": "test-write"}).status_code == 200
    assert httpx.post(f"{base}/v1/batch", json=batch, auth=("wrong", "")).status_code == 401
    # A gzip bomb (a few KB that inflate past the limit) is refused without inflating it all.
    import gzip

    bomb = gzip.compress(b"{" + b" " * (50 * 1024 * 1024) + b"}")
    response = httpx.post(f"{base}/v1/batch", content=bomb, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}, auth=("test-write", ""))
    assert response.status_code == 413
    single = httpx.post(f"{base}/v1/track", json={"event": "Signed Up", "messageId": "m3", "userId": "u", "timestamp": "2024-04-25T11:00:00Z"}, auth=("test-write", ""))
    assert single.status_code == 200 and single.json()["accepted"] == 1

