"""Geo and campaign lookups, their Pandera schemas, enrich_context, and the pure parts of stream health."""

from __future__ import annotations

import ipaddress
import time

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assets.kafka_health import DlqRate, GroupLag, Limits, OffsetSnapshot, StreamHealth, dlq_rate
from enrichment.campaigns import CampaignIndex, normalize_utm
from enrichment.context import enrich_context
from enrichment.geo import GeoIndex, parse_ip
from enrichment.reference_publish import (
    CAMPAIGNS_SPEC,
    GEO_SPEC,
    SPECS,
    ReferenceInvalid,
    failure_summary,
    read_reference,
    validate_reference,
)


@pytest.fixture(scope="module")
def sample_geo() -> GeoIndex:
    return GeoIndex.from_rows(read_reference(GEO_SPEC.sample).to_dict("records"), "sample")


@pytest.fixture(scope="module")
def sample_campaigns() -> CampaignIndex:
    return CampaignIndex.from_rows(
        CAMPAIGNS_SPEC.prepare(read_reference(CAMPAIGNS_SPEC.sample)).to_dict("records"), "sample"
    )


def test_parse_ip_accepts_both_versions_and_rejects_junk():
    assert parse_ip("192.0.2.1") == (4, int(ipaddress.ip_address("192.0.2.1")))
    assert parse_ip(" 2001:db8::1 ") == (6, int(ipaddress.ip_address("2001:db8::1")))
    assert parse_ip("::ffff:192.0.2.1") == parse_ip("192.0.2.1")
    assert parse_ip("fe80::1%eth0") == (6, int(ipaddress.ip_address("fe80::1")))
    for junk in ("", "1.2.3", "256.1.1.1", "example.com", None, 17, "1.2.3.4/24"):
        assert parse_ip(junk) is None


def test_geo_index_finds_ranges_and_their_edges():
    index = GeoIndex.from_rows(
        [
            {
                "start_ip": "10.0.0.0",
                "end_ip": "10.0.0.255",
                "country": "DE",
                "region": "Berlin",
                "city": "Berlin",
            },
            {"start_ip": "10.0.2.0", "end_ip": "10.0.2.9", "country": "FR", "region": "", "city": ""},
            {
                "start_ip": "2001:db8::",
                "end_ip": "2001:db8::ffff",
                "country": "GB",
                "region": "England",
                "city": "London",
            },
        ]
    )
    assert len(index) == 3
    assert index.lookup("10.0.0.0")["city"] == "Berlin"
    assert index.lookup("10.0.0.255")["city"] == "Berlin"
    assert index.lookup("10.0.1.0") is None  # in the gap
    assert dict(index.lookup("10.0.2.9")) == {"country": "FR", "region": None, "city": None}
    assert index.lookup("10.0.2.10") is None
    assert index.lookup("9.255.255.255") is None
    assert index.lookup("2001:db8::abcd")["country"] == "GB"
    assert index.lookup("2001:db8::1:0") is None
    assert index.lookup("::ffff:10.0.0.7")["city"] == "Berlin"
    assert index.lookup("not an ip") is None


def test_geo_index_skips_bad_and_overlapping_rows_instead_of_failing():
    index = GeoIndex.from_rows(
        [
            {"start_ip": "10.0.0.0", "end_ip": "10.0.0.255", "country": "DE"},
            {"start_ip": "10.0.0.128", "end_ip": "10.0.1.0", "country": "FR"},  # overlaps: skipped
            {"start_ip": "10.0.5.0", "end_ip": "2001:db8::", "country": "FR"},  # mixed versions
            {"start_ip": "bogus", "end_ip": "10.0.0.1", "country": "FR"},
        ]
    )
    assert len(index) == 1 and index.lookup("10.0.0.200")["country"] == "DE"


@st.composite
def disjoint_ranges(draw):
    cuts = sorted(draw(st.sets(st.integers(0, 2**32 - 1), min_size=2, max_size=40)))
    ranges = []
    for i, (start, end) in enumerate(zip(cuts[::2], cuts[1::2], strict=False)):
        ranges.append((start, end, f"c{i}"))
    return ranges


@settings(max_examples=60, deadline=None)
@given(disjoint_ranges(), st.lists(st.integers(0, 2**32 - 1), max_size=50))
def test_geo_index_agrees_with_a_linear_scan(ranges, probes):
    rows = [
        {
            "start_ip": str(ipaddress.IPv4Address(s)),
            "end_ip": str(ipaddress.IPv4Address(e)),
            "country": "US",
            "city": c,
        }
        for s, e, c in ranges
    ]
    index = GeoIndex.from_rows(rows)
    for address in (
        probes
        + [s for s, _, _ in ranges]
        + [e for _, e, _ in ranges]
        + [e + 1 for _, e, _ in ranges if e < 2**32 - 1]
    ):
        expected = next((c for s, e, c in ranges if s <= address <= e), None)
        found = index.lookup(str(ipaddress.IPv4Address(address)))
        assert (found["city"] if found else None) == expected


def test_sample_geo_has_thousands_of_ranges_and_documented_addresses(sample_geo):
    assert len(sample_geo.v4.starts) > 3000 and len(sample_geo.v6.starts) > 1000
    assert dict(sample_geo.lookup("192.0.2.10")) == {
        "country": "US",
        "region": "California",
        "city": "San Francisco",
    }
    assert sample_geo.lookup("203.0.113.200")["city"] == "Sydney"
    assert sample_geo.lookup("2001:db8:1::42")["city"] == "Paris"
    assert (
        sample_geo.lookup("10.1.2.3") is None and sample_geo.lookup("127.0.0.1") is None
    )  # private, loopback
    addresses = [f"{a}.{b}.7.9" for a in range(1, 224) for b in range(0, 256, 16)]
    started = time.perf_counter()
    for address in addresses:
        sample_geo.lookup(address)
    per_lookup = (time.perf_counter() - started) / len(addresses)
    assert per_lookup < 50e-6, per_lookup  # a few microseconds in practice; loose for shared CI machines


def test_normalize_utm():
    assert normalize_utm("  Google ") == "google"
    assert normalize_utm("Spring   Sale\t2025") == "spring sale 2025"
    assert normalize_utm(None) == "" and normalize_utm(3) == ""


def test_campaign_lookup_falls_back_from_exact_to_wildcards():
    rows = [
        {
            "utm_source": "google",
            "utm_medium": "cpc",
            "utm_campaign": "spring",
            "campaign_id": "c1",
            "name": "Spring",
            "channel": "paid_search",
        },
        {
            "utm_source": "google",
            "utm_medium": "cpc",
            "utm_campaign": "*",
            "campaign_id": "c2",
            "name": "Google other",
            "channel": "paid_search",
        },
        {
            "utm_source": "google",
            "utm_medium": "*",
            "utm_campaign": "*",
            "campaign_id": "c3",
            "name": "Google any",
            "channel": "other",
        },
        {
            "utm_source": "*",
            "utm_medium": "email",
            "utm_campaign": "*",
            "campaign_id": "c4",
            "name": "Email",
            "channel": "email",
        },
    ]
    index = CampaignIndex.from_rows(rows)
    assert index.lookup(" Google", "CPC", "Spring")[0]["campaign_id"] == "c1"
    assert index.lookup("google", "cpc", "spring")[1] == "exact"
    assert index.lookup("google", "cpc", "summer")[0]["campaign_id"] == "c2"
    assert index.lookup("google", "cpc", None)[1] == "source_medium"
    assert index.lookup("google", "display", "x")[0]["campaign_id"] == "c3"
    assert index.lookup("klaviyo", "email", "welcome") == (index.by_key[("*", "email", "*")], "medium")
    assert index.lookup(None, "email", None)[0]["campaign_id"] == "c4"
    assert index.lookup("bing", "cpc", "spring") is None
    assert index.lookup(None, None, "spring") is None


def test_sample_campaigns_resolve(sample_campaigns):
    assert len(sample_campaigns) > 3000
    attributes, match = sample_campaigns.lookup("google", "cpc", "black_friday_2024_books_jp")
    assert (attributes["campaign_id"], attributes["channel"], match) == ("cmp_00001", "paid_search", "exact")
    assert sample_campaigns.lookup("google", "cpc", "unknown")[0]["campaign_id"] == "cmp_google_cpc_other"
    assert sample_campaigns.lookup("someone", "email", "x")[0]["campaign_id"] == "cmp_any_email"


def test_enrich_context_has_a_stable_shape(sample_geo, sample_campaigns):
    context = enrich_context(
        {
            "ip": "198.51.100.7",
            "utm_source": "Google",
            "utm_medium": "cpc",
            "utm_campaign": "black_friday_2024_books_jp",
        },
        geo=sample_geo,
        campaigns=sample_campaigns,
    )
    assert context == {
        "geo": {"country": "DE", "region": "Berlin", "city": "Berlin"},
        "campaign": {
            "campaign_id": "cmp_00001",
            "name": "Black Friday 2024 · Books · JP (Google Ads)",
            "channel": "paid_search",
            "match": "exact",
        },
    }
    segment = enrich_context(
        {"utm_source": "google", "utm_medium": "cpc", "utm_name": "black_friday_2024_books_jp"},
        geo=sample_geo,
        campaigns=sample_campaigns,
    )
    assert segment["campaign"]["campaign_id"] == "cmp_00001"
    empty = {
        "geo": dict.fromkeys(("country", "region", "city")),
        "campaign": dict.fromkeys(("campaign_id", "name", "channel", "match")),
    }
    assert enrich_context(None, geo=sample_geo, campaigns=sample_campaigns) == empty
    assert enrich_context({"ip": 12, "utm_source": ["x"]}, geo=GeoIndex(), campaigns=CampaignIndex()) == empty


def test_every_sample_file_passes_its_schema_and_stays_small():
    for spec in SPECS.values():
        frame = read_reference(spec.sample)
        assert len(validate_reference(spec, frame, spec.sample, None)) == len(frame) >= 2000
        assert spec.sample.stat().st_size < 1_000_000


def _frame(text: str) -> pd.DataFrame:
    import io

    return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""])


def test_geo_schema_rejects_overlaps_bad_ips_and_reversed_ranges():
    frame = _frame(
        "start_ip,end_ip,country,region,city\n"
        "192.0.2.0,192.0.2.255,US,California,San Francisco\n"  # line 2: overlaps line 3
        "192.0.2.128,192.0.3.0,US,New York,New York\n"
        "300.1.1.1,1.1.1.1,US,,\n"  # line 4: bad IP
        "2001:db8::,192.0.2.1,GB,,\n"  # line 5: mixed versions
        "2001:db8::9,2001:db8::1,GB,,\n"  # line 6: reversed
        "198.51.100.0,198.51.100.255,us,,\n"  # line 7: lower-case country
        "203.0.113.0,203.0.113.255,NA,Khomas,Windhoek\n"  # Namibia's code is not a missing value
    )
    with pytest.raises(ReferenceInvalid) as caught:
        validate_reference(GEO_SPEC, frame, "bad.csv", "v1")
    assert caught.value.rows == 7 and caught.value.rejects == 6
    assert "the live geo stays v1" in str(caught.value)
    assert sorted(failure_summary(caught.value.failures)["line"].unique()) == [2, 3, 4, 5, 6, 7]


def test_campaign_schema_rejects_duplicates_after_normalizing_and_misplaced_wildcards():
    frame = _frame(
        "utm_source,utm_medium,utm_campaign,campaign_id,name,channel,start_date,end_date\n"
        "Google,cpc,spring,c1,Spring,paid_search,,\n"
        "google, CPC ,Spring,c2,Spring again,paid_search,,\n"  # same key once normalized
        "*,*,*,c3,Everything,other,,\n"
        "bing,cpc,x,c1,Duplicate id,paid_search,,\n"
        "bing,cpc,y,c5,Bad channel,emial,,\n"
        "bing,cpc,z,c6,Backwards,paid_search,2025-03-01,2025-02-01\n"
        "bing,,z,c7,No medium,paid_search,,\n"
        "bing,cpc,ok,c8,Fine,paid_search,2025-03-01,2025-03-31\n"
    )
    with pytest.raises(ReferenceInvalid) as caught:
        validate_reference(CAMPAIGNS_SPEC, CAMPAIGNS_SPEC.prepare(frame), "bad.csv", None)
    assert caught.value.rejects == 7


def test_missing_columns_reject_every_row():
    with pytest.raises(ReferenceInvalid) as caught:
        validate_reference(
            GEO_SPEC, _frame("start_ip,country\n192.0.2.1,US\n192.0.2.2,US\n"), "bad.csv", None
        )
    assert caught.value.rejects == 2


def _snapshot(at, events, dlq, events_start=0, dlq_start=0, oldest_ms=None):
    return OffsetSnapshot(
        at=at,
        events_start=events_start,
        events_end=events,
        dlq_start=dlq_start,
        dlq_end=dlq,
        oldest_ms=oldest_ms,
    )


def test_dlq_rate_since_the_previous_measurement_or_over_the_retained_topics():
    rate = dlq_rate(_snapshot(1000.0, 100, 5), _snapshot(1120.0, 1100, 35))
    assert (rate.basis, rate.events, rate.dead_letters, rate.per_minute, rate.ratio) == (
        "since previous measurement",
        1000,
        30,
        15.0,
        0.03,
    )
    first = dlq_rate(None, _snapshot(1120.0, 500, 20, events_start=100, oldest_ms=1_000_000))
    assert (first.basis, first.events, first.dead_letters, first.window_s) == (
        "retained topics",
        400,
        20,
        120.0,
    )
    reset = dlq_rate(_snapshot(1000.0, 9000, 50), _snapshot(1120.0, 10, 0))  # the broker lost its topics
    assert reset.basis == "retained topics"
    assert dlq_rate(None, _snapshot(1.0, 0, 3)).ratio == 1.0  # dead letters without events


def test_stream_health_problems_follow_the_limits():
    def lag(age):
        return GroupLag("g", "t", 5 if age else 0, age, True)

    snapshot = _snapshot(0.0, 0, 0)
    quiet = StreamHealth(lag(0.0), lag(0.0), DlqRate("retained topics", 60, 0, 0), snapshot)
    assert quiet.problems() == []
    assert StreamHealth(lag(61.0), lag(0.0), DlqRate("x", 60, 1000, 9), snapshot).problems() == [
        "profiles_fresh"
    ]
    assert StreamHealth(lag(0.0), lag(301.0), DlqRate("x", 60, 1000, 9), snapshot).problems() == [
        "consumer_lag"
    ]
    assert StreamHealth(lag(400.0), lag(0.0), DlqRate("x", 60, 100, 10), snapshot).problems() == [
        "profiles_fresh",
        "consumer_lag",
        "dlq_rate",
    ]
    assert (
        StreamHealth(lag(0.0), lag(0.0), DlqRate("x", 60, 100, 10), snapshot).problems(Limits(dlq_ratio=0.2))
        == []
    )
