"""Collector -> profile app -> identity stitching -> rules -> decisions, with real processes."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import pytest

from orchestration.local_services import free_port
from tests.integration.test_collector_api import read_topic

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RULES = """
rules:
  - id: category_affinity
    on: [page_view]
    when: 'event.category in profile.category_views && profile.category_views[event.category] >= 3'
    per: event.category
    action: {type: banner, message: "New in {category}", params: {category: event.category}}
    cooldown: 1h
  - id: notify_crm
    on: [identify]
    when: 'profile.event_count >= 1'
    action: {type: webhook, url: "URL"}
"""
SEARCH_RULE = """
  - id: searcher
    on: [search]
    when: 'profile.counts_by_type["search"] >= 1'
    action: {type: offer, message: "Need help finding something?", offer: {code: HELP}}
"""


class _Hooks(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hooks.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def event(kind, ts, *, user=None, anon=None, **metadata):
    body = {"event_id": str(uuid.uuid4()), "event_type": kind, "timestamp": ts.isoformat(), "metadata": metadata}
    if user:
        body["user_id"] = user
    if anon:
        body["anonymous_id"] = anon
    return body


def wait_for(fetch, predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if predicate(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def test_anonymous_browsing_then_identify_fires_a_banner_for_the_merged_person(settings, pulse_apps, tmp_path):
    hooks = HTTPServer(("127.0.0.1", free_port()), _Hooks)
    threading.Thread(target=hooks.serve_forever, daemon=True).start()
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(RULES.replace("URL", f"http://127.0.0.1:{hooks.server_port}/hook"))
    settings.rules_file = rules_file
    settings.rules_refresh_seconds = 0.2
    pulse_apps("profile-app")
    pulse_apps("api")
    base = f"http://{settings.api_host}:{settings.api_port}"
    write = httpx.Client(base_url=base, headers={"X-Pulse-Key": "test-write"}, timeout=30)
    read = httpx.Client(base_url=base, headers={"X-Pulse-Key": "test-read"}, timeout=30)
    anon, user = f"a-{uuid.uuid4().hex[:6]}", f"u-{uuid.uuid4().hex[:6]}"
    t0 = datetime.now(UTC) - timedelta(minutes=10)

    # Two anonymous views, the identify, then a third view still sent anonymously.
    steps = [
        [event("page_view", t0, anon=anon, category="shoes", product_id="p1")],
        [event("page_view", t0 + timedelta(minutes=1), anon=anon, category="shoes", product_id="p2")],
        [event("identify", t0 + timedelta(minutes=2), user=user, anon=anon)],
    ]
    for batch in steps:
        assert write.post("/v1/events", json={"events": batch}).status_code == 202
    merged = wait_for(lambda: read.get(f"/v1/profiles/{anon}").json(), lambda p: p.get("event_count") == 3)
    assert merged["user_id"] == user and merged["category_views"] == {"shoes": 2}
    early = read.get(f"/v1/decisions/{user}").json()["decisions"]
    assert "category_affinity" not in {d["rule"] for d in early}  # two views are not enough

    third = event("page_view", t0 + timedelta(minutes=3), anon=anon, category="shoes", product_id="p3")
    assert write.post("/v1/events", json=third).status_code == 202
    decisions = wait_for(
        lambda: read.get(f"/v1/decisions/{anon}").json(),
        lambda d: any(x["rule"] == "category_affinity" for x in d.get("decisions", [])),
    )
    banners = [d for d in decisions["decisions"] if d["rule"] == "category_affinity"]
    assert len(banners) == 1 and banners[0]["message"] == "New in shoes"
    assert banners[0]["params"] == {"category": "shoes"} and banners[0]["event_id"] == third["event_id"]
    assert decisions["user_id"] == user
    assert read.get(f"/v1/decisions/{user}").json()["decisions"] == decisions["decisions"]
    profile = read.get(f"/v1/profiles/{user}").json()
    assert profile["event_count"] == 4 and profile["category_views"] == {"shoes": 3}
    assert profile["anonymous_ids"] == [anon]

    # The same event again (a client retry) changes nothing and fires nothing.
    assert write.post("/v1/events", json=third).status_code == 202
    # The webhook rule posted the identify decision.
    hooks_seen = wait_for(lambda: list(_Hooks.received), lambda r: r)
    assert [h["rule"] for h in hooks_seen] == ["notify_crm"]

    # A new rule in the file is picked up without restarting the profile app.
    rules_file.write_text(rules_file.read_text() + SEARCH_RULE)
    time.sleep(1.0)
    assert write.post("/v1/events", json=event("search", t0 + timedelta(minutes=4), user=user, anon=anon, query="boots")).status_code == 202
    offers = wait_for(
        lambda: read.get(f"/v1/decisions/{user}").json()["decisions"], lambda ds: any(d["rule"] == "searcher" for d in ds)
    )
    assert any(d["rule"] == "searcher" and d["offer"] == {"code": "HELP"} for d in offers)

    triggers = read_topic(settings.kafka_brokers, settings.topic_triggers, 3)
    fired = sorted(json.loads(m.value())["rule"] for m in triggers)
    assert fired == ["category_affinity", "notify_crm", "searcher"]
    assert {m.key().decode() for m in triggers} == {user}
    hooks.shutdown()
