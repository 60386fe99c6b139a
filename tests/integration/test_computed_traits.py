"""Computed traits with real processes: collector -> profile app -> Redis -> API and rules.

A trait added to the file is live without restart, a bad file keeps the traits loaded before,
and a rule reads ``profile.computed.<name>``.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.integration.test_personalization import event, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TRAITS = """
traits:
  shoe_views_30d: {kind: count, on: [page_view], where: 'event.category == "shoes"', window: 30d}
  lifetime_spend: {kind: sum, on: [purchase], field: metadata.price}
  plan:           {kind: last, on: [identify], field: metadata.traits.plan}
"""
NEW_TRAIT = """
  biggest_order:  {kind: max, on: [purchase], field: metadata.price}
"""
RULES = """
rules:
  - id: shoe_fan
    on: [page_view]
    when: 'has(profile.computed.shoe_views_30d) && profile.computed.shoe_views_30d >= 2'
    action: {type: banner, message: "Shoes for you"}
    max_fires: 1
"""


def test_traits_are_live_reloaded_and_read_by_rules(settings, pulse_apps, tmp_path):
    traits_file, rules_file = tmp_path / "traits.yaml", tmp_path / "rules.yaml"
    traits_file.write_text(TRAITS)
    rules_file.write_text(RULES)
    settings.traits_file, settings.traits_refresh_seconds = traits_file, 0.2
    settings.rules_file, settings.rules_refresh_seconds = rules_file, 0.2
    pulse_apps("profile-app")
    pulse_apps("api")
    base = f"http://{settings.api_host}:{settings.api_port}"
    write = httpx.Client(base_url=base, headers={"X-Pulse-Key": "test-write"}, timeout=30)
    read = httpx.Client(base_url=base, headers={"X-Pulse-Key": "test-read"}, timeout=30)
    user = f"u-{uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC)
    batch = [
        event("page_view", now - timedelta(days=40), user=user, category="shoes"),  # outside 30 days
        event("page_view", now - timedelta(days=2), user=user, category="shoes"),
        event("page_view", now - timedelta(minutes=5), user=user, category="shoes"),
        event("page_view", now - timedelta(minutes=4), user=user, category="books"),
        event("purchase", now - timedelta(minutes=3), user=user, order_id="o1", price=30.5, product_id="p1"),
        event("identify", now - timedelta(minutes=2), user=user, traits={"plan": "free", "seats": 3}),
        event("identify", now - timedelta(minutes=1), user=user, traits={"plan": "pro"}),
    ]
    assert write.post("/v1/events", json={"events": batch}).status_code == 202
    profile = wait_for(lambda: read.get(f"/v1/profiles/{user}").json(), lambda p: p.get("event_count") == 7)
    assert profile["traits"] == {"plan": "pro", "seats": 3}
    assert profile["computed"] == {"shoe_views_30d": 2, "lifetime_spend": 30.5, "plan": "pro"}
    assert profile["counts_7d"] == {"identify": 2, "page_view": 3, "purchase": 1}
    assert profile["counts_30d"] == profile["counts_7d"]
    assert set(profile["interests"]) == {"shoes", "books"}
    assert profile["interests"]["shoes"] > profile["interests"]["books"] > 0.99
    decisions = wait_for(
        lambda: read.get(f"/v1/decisions/{user}").json()["decisions"],
        lambda ds: any(d["rule"] == "shoe_fan" for d in ds),
    )
    assert [d["rule"] for d in decisions] == ["shoe_fan"]

    # A new trait is picked up without restarting anything; events from then on count in it.
    traits_file.write_text(TRAITS + NEW_TRAIT)
    time.sleep(1.5)
    order = event("purchase", now, user=user, order_id="o2", price=99.0, product_id="p2")
    assert write.post("/v1/events", json=order).status_code == 202
    profile = wait_for(lambda: read.get(f"/v1/profiles/{user}").json(), lambda p: p.get("event_count") == 8)
    assert profile["computed"]["biggest_order"] == 99.0
    assert profile["computed"]["lifetime_spend"] == 129.5

    # A bad file is rejected whole: the traits loaded before stay, in the stream and the API.
    traits_file.write_text(TRAITS + NEW_TRAIT + "  broken: {kind: median, on: [purchase]}\n")
    time.sleep(1.5)
    order = event("purchase", now, user=user, order_id="o3", price=150.0, product_id="p2")
    assert write.post("/v1/events", json=order).status_code == 202
    profile = wait_for(lambda: read.get(f"/v1/profiles/{user}").json(), lambda p: p.get("event_count") == 9)
    assert profile["computed"]["biggest_order"] == 150.0
    assert profile["computed"]["lifetime_spend"] == 279.5
    assert "broken" not in profile["computed"]
