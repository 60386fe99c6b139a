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
from pydantic import SecretStr

from streaming.relay.signing import verify
from tests.integration.test_collector_api import read_topic

pytestmark = [pytest.mark.integration, pytest.mark.slow]
WEBHOOK_SECRET = "personalization-secret"

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
        verify(WEBHOOK_SECRET, self.headers["Pulse-Signature"], body, now=time.time())  # or no entry
        _Hooks.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def event(kind, ts, *, user=None, anon=None, **metadata):
    body = {
        "event_id": str(uuid.uuid4()),
        "event_type": kind,
        "timestamp": ts.isoformat(),
        "metadata": metadata,
    }
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


def test_anonymous_browsing_then_identify_fires_a_banner_for_the_merged_person(
    settings, pulse_apps, tmp_path
):
    hooks = HTTPServer(("127.0.0.1", 0), _Hooks)  # holds its port from the bind
    threading.Thread(target=hooks.serve_forever, daemon=True).start()
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(RULES.replace("URL", f"http://127.0.0.1:{hooks.server_port}/hook"))
    settings.rules_file = rules_file
    settings.rules_refresh_seconds = 0.2
    settings.webhook_secret = SecretStr(WEBHOOK_SECRET)
    pulse_apps("profile-app")
    pulse_apps("api")
    pulse_apps("relay")  # the webhook rule's decisions are posted by the relay
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
    # The relay posted the webhook rule's identify decision, signed.
    hooks_seen = wait_for(lambda: list(_Hooks.received), lambda r: r)
    assert [h["rule"] for h in hooks_seen] == ["notify_crm"]

    # A new rule in the file is picked up without restarting the profile app.
    rules_file.write_text(rules_file.read_text() + SEARCH_RULE)
    time.sleep(1.0)
    assert (
        write.post(
            "/v1/events", json=event("search", t0 + timedelta(minutes=4), user=user, anon=anon, query="boots")
        ).status_code
        == 202
    )
    offers = wait_for(
        lambda: read.get(f"/v1/decisions/{user}").json()["decisions"],
        lambda ds: any(d["rule"] == "searcher" for d in ds),
    )
    assert any(d["rule"] == "searcher" and d["offer"] == {"code": "HELP"} for d in offers)

    triggers = read_topic(settings.kafka_brokers, settings.topic_triggers, 3)
    fired = sorted(json.loads(m.value())["rule"] for m in triggers)
    assert fired == ["category_affinity", "notify_crm", "searcher"]
    assert {m.key().decode() for m in triggers} == {user}
    hooks.shutdown()


ONCE_RULES = """
rules:
  - id: category_affinity
    on: [page_view]
    when: 'event.category in profile.category_views && profile.category_views[event.category] >= 3'
    per: event.category
    action: {type: banner, message: "New in {category}", params: {category: event.category}}
    max_fires: 1
  - id: two_adds
    on: [add_to_cart]
    when: 'profile.counts_by_type["add_to_cart"] >= 2'
    action: {type: offer, offer: {code: TWO}}
    max_fires: 1
  - id: spender
    on: [purchase]
    when: 'profile.purchase_total >= 200.0'
    action: {type: segment, segment: vip}
    max_fires: 1
"""


@pytest.mark.parametrize("prefilter", [True, False], ids=["prefilter", "python-only"])
def test_stream_decisions_equal_the_backtest_of_the_same_events(
    settings, pulse_apps, redis_client, tmp_path, prefilter
):
    """Monotonic rules that fire once per key: the stream and `pulse rules test` agree on who fired.

    With the update script's prefilter (the default) and without it (PULSE_RULES_PREFILTER=false).
    """
    import msgspec

    from enrichment.catalog import SAMPLE_CATALOG, Catalog, categories_from_rows, read_catalog_csv
    from enrichment.reference_store import CATALOG, publish_reference
    from orchestration.demo_traffic import TrafficGenerator
    from streaming.profiles.keys import decode_id
    from streaming.rules.backtest import backtest
    from streaming.rules.engine import RuleEngine
    from streaming.rules.loader import parse_rules
    from tests.integration.helpers import post_batches, store_for

    rows = read_catalog_csv(SAMPLE_CATALOG)
    catalog = Catalog(
        publish_reference(redis_client, CATALOG, rows, "product_id"), categories_from_rows(rows)
    )
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(ONCE_RULES)
    settings.rules_file = rules_file
    settings.rules_prefilter = prefilter
    pulse_apps("profile-app")
    pulse_apps("api")
    events = list(TrafficGenerator(catalog.categories, users=40, seed=21).events(2500))
    acknowledged = post_batches(
        f"http://{settings.api_host}:{settings.api_port}", "test-write", events, batch_size=100
    )

    report = backtest(
        RuleEngine(parse_rules(ONCE_RULES)), (msgspec.json.encode(e) for e in acknowledged), catalog
    )
    assert report.results["category_affinity"].fired > 10 and report.results["two_adds"].fired > 5
    store = store_for(settings.redis_url, settings.session_timeout_seconds * 1000)

    def people_fires(pairs):
        pairs = list(pairs)
        person_of = store.resolve_people([person for person, _ in pairs]) if pairs else {}
        fires = [(person_of[person], key) for person, key in pairs]
        assert len(fires) == len(set(fires)), "a once-per-key rule fired twice for one person"
        return set(fires)

    def live_fires():
        pairs = []
        for key in redis_client.scan_iter("pulse:{*}:decisions", count=1000):
            owner = decode_id(key.decode()[len("pulse:{") : -len("}:decisions")])
            pairs += [(owner, k.decode()) for k in redis_client.hkeys(key)]
        return pairs

    def settled():
        return len(list(redis_client.scan_iter("pulse:{*}:seen:*", count=10_000))) >= report.events

    wait_for(settled, bool, timeout=60)
    expected = people_fires(pair for r in report.results.values() for pair in _all_fires(r))
    assert (
        wait_for(lambda: people_fires(live_fires()), lambda fires: fires == expected, timeout=30) == expected
    )
    vip = {person for person, key in expected if key == "spender"}
    assert vip and all("vip" in store.get_person(person)["segments"] for person in vip)


def _all_fires(result):
    assert result.fired == len(result.keys), (result.fired, len(result.keys))
    return sorted(result.keys)
