"""Enrichment from the request: user agents (real strings), bots, trusted proxies, metadata.context."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from core.settings import PulseSettings
from enrichment.campaigns import CampaignIndex
from enrichment.geo import GeoIndex
from enrichment.networks import InvalidNetworkError, NetworkSet
from enrichment.request_context import bot_reason, event_context, is_bot_event
from enrichment.user_agent import UserAgentParser
from streaming.api.app import create_app
from streaming.api.client_ip import client_ip
from streaming.api.ingest import plan_ingest
from streaming.api.ip_privacy import IPAnonymizer
from streaming.api.request_enrich import RequestEnricher
from tests.unit.test_event_contract import event
from tests.unit.test_security import FakeProducer, FakeStore

GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
GOOGLEBOT_SMARTPHONE = (
    "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/125.0.6422.175 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
)
BINGBOT = "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)"
CURL = "curl/8.5.0"
PYTHON_REQUESTS = "python-requests/2.32.3"
HEADLESS_CHROME = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/126.0.0.0 "
    "Safari/537.36"
)
CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
CHROME_ANDROID = (
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 "
    "Mobile Safari/537.36"
)
SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Mobile/15E148 Safari/604.1"
)
SAFARI_IPAD = (
    "Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Mobile/15E148 Safari/604.1"
)
SAFARI_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Safari/605.1.15"
)
FIREFOX_LINUX = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
FIREFOX_ANDROID = "Mozilla/5.0 (Android 14; Mobile; rv:133.0) Gecko/133.0 Firefox/133.0"

parse = UserAgentParser()


@pytest.mark.parametrize(
    "text", [GOOGLEBOT, GOOGLEBOT_SMARTPHONE, BINGBOT, CURL, PYTHON_REQUESTS, HEADLESS_CHROME]
)
def test_bots_and_crawlers_are_bots(text):
    agent = parse(text)
    assert agent is not None and agent.bot and agent.device_type == "bot"


@pytest.mark.parametrize(
    ("text", "device", "browser", "os"),
    [
        (CHROME_WINDOWS, "desktop", "Chrome", "Windows"),
        (CHROME_ANDROID, "mobile", "Chrome Mobile", "Android"),
        (SAFARI_IPHONE, "mobile", "Mobile Safari", "iOS"),
        (SAFARI_IPAD, "tablet", "Mobile Safari", "iOS"),
        (SAFARI_MAC, "desktop", "Safari", "Mac OS X"),
        (FIREFOX_LINUX, "desktop", "Firefox", "Ubuntu"),
        (FIREFOX_ANDROID, "mobile", "Firefox Mobile", "Android"),
    ],
)
def test_real_browsers_are_people_with_device_browser_and_os(text, device, browser, os):
    agent = parse(text)
    assert agent is not None and not agent.bot
    assert (agent.device_type, agent.browser, agent.os) == (device, browser, os)


def test_versions_brand_and_model_and_the_context_shape():
    agent = parse(SAFARI_IPHONE)
    assert agent.as_context() == {
        "type": "mobile",
        "browser": "Mobile Safari",
        "browser_version": "17.5",
        "os": "iOS",
        "os_version": "17.5",
        "brand": "Apple",
        "model": "iPhone",
    }
    assert parse(GOOGLEBOT).as_context() == {"type": "bot", "browser": "Googlebot", "browser_version": "2.1"}


def test_the_parse_is_cached_per_string_and_garbage_is_no_user_agent():
    parser = UserAgentParser(cache_size=4)
    assert parser(CHROME_WINDOWS) is parser(CHROME_WINDOWS)
    assert parser.parse.cache_info().hits == 1
    assert parser(None) is None and parser("  ") is None and parser(42) is None
    assert parser("x" * 100_000).device_type == "other"  # cut to 1 KB before parsing


def test_networks_match_addresses_and_cidrs_of_both_versions():
    nets = NetworkSet.parse(["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"], "PULSE_X")
    assert "10.1.2.3" in nets and "192.0.2.7" in nets and "2001:db8::1" in nets
    assert "192.0.2.8" not in nets and "11.0.0.1" not in nets and "not-an-ip" not in nets and None not in nets
    assert "::ffff:10.0.0.1" in nets
    with pytest.raises(InvalidNetworkError, match="PULSE_X: '10.0.0.0/33' is not an IP address or CIDR"):
        NetworkSet.parse(["10.0.0.0/33"], "PULSE_X")


def test_x_forwarded_for_only_from_trusted_proxies():
    trusted = NetworkSet.parse(["10.0.0.0/8"], "PULSE_TRUSTED_PROXIES")
    assert (
        client_ip("203.0.113.9", "198.51.100.1", trusted) == "203.0.113.9"
    )  # untrusted peer: header ignored
    assert client_ip("10.0.0.2", "198.51.100.1", trusted) == "198.51.100.1"
    # the client forged a left-most entry; the trusted proxies appended the rest
    assert client_ip("10.0.0.2", "1.2.3.4, 198.51.100.1, 10.0.0.5", trusted) == "198.51.100.1"
    assert client_ip("10.0.0.2", None, trusted) == "10.0.0.2"
    assert client_ip("10.0.0.2", "10.0.0.7", trusted) == "10.0.0.7"  # only proxies: the first
    assert client_ip("10.0.0.2", "unknown", trusted) is None
    assert client_ip("10.0.0.2", "198.51.100.1", NetworkSet()) == "10.0.0.2"


def test_bot_reason_from_user_agent_or_denied_ip():
    deny = NetworkSet.parse(["198.51.100.0/24"], "PULSE_BOT_IP_DENYLIST")
    assert bot_reason(parse(GOOGLEBOT), "203.0.113.1", deny) == "user_agent"
    assert bot_reason(parse(CHROME_WINDOWS), "198.51.100.20", deny) == "ip"
    assert bot_reason(parse(CHROME_WINDOWS), "203.0.113.1", deny) is None
    assert bot_reason(None, None, NetworkSet()) is None


def test_event_context_has_device_geo_campaign_and_only_what_is_known():
    geo = GeoIndex.from_rows(
        [{"start_ip": "203.0.113.0", "end_ip": "203.0.113.255", "country": "DE", "region": "BE", "city": ""}]
    )
    campaigns = CampaignIndex.from_rows(
        [{"utm_source": "newsletter", "utm_medium": "email", "utm_campaign": "*", "campaign_id": "c1",
          "name": "News", "channel": "email"}]
    )  # fmt: skip
    metadata = {
        "ip": "203.0.113.7",
        "utm_source": "Newsletter",
        "utm_medium": "email",
        "utm_campaign": "spring",
    }
    context = event_context(metadata, agent=parse(SAFARI_IPHONE), geo=geo, campaigns=campaigns, bot=None)
    assert context["geo"] == {"country": "DE", "region": "BE"}
    assert context["campaign"] == {
        "source": "Newsletter",
        "medium": "email",
        "name": "spring",
        "campaign_id": "c1",
        "channel": "email",
    }
    assert context["device"]["type"] == "mobile" and "bot" not in context
    assert event_context({}, agent=None, geo=geo, campaigns=campaigns, bot=None) == {}
    tagged = event_context({}, agent=parse(CURL), geo=GeoIndex(), campaigns=CampaignIndex(), bot="user_agent")
    assert tagged["bot"] is True and tagged["bot_reason"] == "user_agent"
    assert is_bot_event({"context": tagged}) and not is_bot_event({"context": {"bot": "yes"}})


def _enricher(**overrides: Any) -> RequestEnricher:
    return RequestEnricher(PulseSettings(**overrides))


def test_browser_requests_fill_ip_and_user_agent_and_tag_bots_before_anonymization():
    enrich = _enricher(trusted_proxies="10.0.0.0/8").for_request(
        {"origin": "https://shop.example", "user-agent": GOOGLEBOT, "x-forwarded-for": "198.51.100.23"},
        {},
        "10.0.0.2",
    )
    plan = plan_ingest(
        [event(metadata={"url": "https://shop.example/"})],
        received_at="t",
        events_topic="ev",
        dlq_topic="dlq",
        anonymize=IPAnonymizer("truncate").scrub,
        enrich=enrich,
    )
    metadata = json.loads(plan.records[0].value)["metadata"]
    assert metadata["ip"] == "198.51.100.0" and metadata["user_agent"] == GOOGLEBOT
    assert metadata["context"]["bot"] is True and metadata["context"]["device"]["type"] == "bot"
    assert plan.bots == {"user_agent": 1}


def test_server_requests_keep_their_events_and_are_never_bots():
    enrich = _enricher(bot_ip_denylist="10.0.0.0/8").for_request({"user-agent": CURL}, {}, "10.0.0.2")
    assert enrich(event()) == event()  # nothing of the server's own address or agent
    forwarded = enrich(event(metadata={"user_agent": GOOGLEBOT, "ip": "10.1.1.1"}))
    assert forwarded["metadata"]["context"] == {
        "device": {"type": "bot", "browser": "Googlebot", "browser_version": "2.1"}
    }


def test_the_event_keeps_what_it_says_and_a_forged_context_is_replaced():
    enrich = _enricher().for_request({"origin": "o", "user-agent": CURL}, {}, "203.0.113.5")
    mine = enrich(
        event(metadata={"ip": "192.0.2.1", "user_agent": CHROME_WINDOWS, "context": {"bot": False}})
    )
    assert mine["metadata"]["ip"] == "192.0.2.1" and mine["metadata"]["user_agent"] == CHROME_WINDOWS
    assert mine["metadata"]["context"] == {"device": parse(CHROME_WINDOWS).as_context()}
    curl = enrich(event(metadata={"context": {"bot": False}}))
    assert curl["metadata"]["context"]["bot"] is True


def test_request_context_none_and_all():
    headers = {"user-agent": FIREFOX_LINUX}
    assert "ip" not in _enricher(request_context="none").for_request({"origin": "o"}, {}, "203.0.113.5")(
        event()
    ).get("metadata", {})
    filled = _enricher(request_context="all").for_request(headers, {}, "203.0.113.5")(event())
    assert filled["metadata"]["ip"] == "203.0.113.5" and "bot" not in filled["metadata"]["context"]


def test_enrichment_that_would_pass_32kb_is_left_out():
    from quality.event_contract import MAX_EVENT_BYTES

    base = event(metadata={"note": ""})
    exact = event(metadata={"note": "x" * (MAX_EVENT_BYTES - len(json.dumps(base, separators=(",", ":"))))})
    enrich = _enricher().for_request({"origin": "o", "user-agent": CHROME_WINDOWS}, {}, "203.0.113.5")
    plan = plan_ingest([exact], received_at="t", events_topic="ev", dlq_topic="dlq", enrich=enrich)
    assert plan.accepted == 1
    assert json.loads(plan.records[0].value)["metadata"] == exact["metadata"]


def _bot_count(reason: str) -> float:
    return REGISTRY.get_sample_value("pulse_collector_bot_events_total", {"reason": reason}) or 0.0


def test_the_collector_tags_browser_bots_counts_them_and_exempts_server_sdks():
    settings = PulseSettings(write_keys="w", read_keys="r", ip_anonymization="none")
    producer = FakeProducer()
    client = TestClient(create_app(settings, producer=producer, store=FakeStore()))  # type: ignore[arg-type]
    before = _bot_count("user_agent")
    browser = client.post("/v1/events?key=w", json=event(), headers={"User-Agent": BINGBOT})
    server = client.post("/v1/events", json=event(), headers={"X-Pulse-Key": "w", "User-Agent": BINGBOT})
    assert browser.status_code == server.status_code == 202
    sent_by_browser, sent_by_server = (json.loads(r.value) for r in producer.records)
    assert sent_by_browser["metadata"]["context"]["bot"] is True
    assert sent_by_browser["metadata"]["user_agent"] == BINGBOT and sent_by_browser["metadata"]["ip"]
    assert sent_by_server == {**event(), "received_at": sent_by_server["received_at"]}  # as sent
    assert _bot_count("user_agent") == before + 1
    assert 'pulse_collector_bot_events_total{reason="user_agent"}' in client.get("/metrics").text


def test_every_device_type_is_one_the_archive_schema_accepts():
    from quality.archive_schema import DEVICE_TYPES

    agents = [GOOGLEBOT, CURL, CHROME_WINDOWS, SAFARI_IPHONE, SAFARI_IPAD, "NokiaN95/1.0", "x"]
    assert {parse(a).device_type for a in agents} == set(DEVICE_TYPES)
