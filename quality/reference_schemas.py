"""Pandera schemas of reference data (validated before anything is published)."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa

from core.ip_address import parse_ip
from quality.campaign_format import CAMPAIGN_WILDCARD, UTM_FIELDS

CATALOG_SCHEMA = pa.DataFrameSchema(
    {
        "product_id": pa.Column(str, checks=pa.Check.str_length(1, 256), unique=True),
        "category": pa.Column(str, checks=pa.Check.str_length(1, 256)),
        "price": pa.Column(float, checks=pa.Check.ge(0), coerce=True, required=False),
    },
    strict=False,
    name="product_catalog",
)

CHANNELS = frozenset(
    {
        "paid_search",
        "organic_search",
        "paid_social",
        "organic_social",
        "email",
        "display",
        "native",
        "video",
        "affiliate",
        "referral",
        "sms",
        "push",
        "partner",
        "other",
    }
)


def _parsed(series: pd.Series) -> list[tuple[int, int] | None]:
    # Plain Python ints: pandas would turn IPv6 integers (beyond 64 bits) into floats.
    return [parse_ip(value) for value in series]


def _range_well_formed(df: pd.DataFrame) -> pd.Series:
    """Start and end are the same IP version and start <= end (rows with an invalid IP fail elsewhere)."""
    ok = [
        a is None or b is None or (a[0] == b[0] and a[1] <= b[1])
        for a, b in zip(_parsed(df["start_ip"]), _parsed(df["end_ip"]), strict=True)
    ]
    return pd.Series(ok, index=df.index)


def _ranges_disjoint(df: pd.DataFrame) -> pd.Series:
    """No range overlaps another of the same IP version (both rows of an overlap fail)."""
    ok = pd.Series(True, index=df.index)
    pairs = zip(_parsed(df["start_ip"]), _parsed(df["end_ip"]), df.index, strict=True)
    ranges = [(a[0], a[1], b[1], row) for a, b, row in pairs if a and b and a[0] == b[0]]
    reach: dict[int, tuple[int, object]] = {}  # per IP version: the furthest end so far, and its row
    for version, start, end, row in sorted(ranges, key=lambda r: (r[0], r[1])):
        furthest = reach.get(version)
        if furthest is not None and start <= furthest[0]:
            ok.loc[row] = False
            ok.loc[furthest[1]] = False
        if furthest is None or end > furthest[0]:
            reach[version] = (end, row)
    return ok


def _valid_ip(series: pd.Series) -> pd.Series:
    return pd.Series([parsed is not None for parsed in _parsed(series)], index=series.index)


GEO_SCHEMA = pa.DataFrameSchema(
    {
        "start_ip": pa.Column(str, checks=pa.Check(_valid_ip, error="an IPv4 or IPv6 address")),
        "end_ip": pa.Column(str, checks=pa.Check(_valid_ip, error="an IPv4 or IPv6 address")),
        "country": pa.Column(
            str, checks=pa.Check.str_matches(r"^[A-Z]{2}$", error="ISO 3166-1 alpha-2 code")
        ),
        "region": pa.Column(str, nullable=True, checks=pa.Check.str_length(1, 128)),
        "city": pa.Column(str, nullable=True, checks=pa.Check.str_length(1, 128)),
    },
    checks=[
        pa.Check(_range_well_formed, error="start_ip and end_ip of one IP version, start_ip <= end_ip"),
        pa.Check(_ranges_disjoint, error="ranges must not overlap"),
    ],
    strict=False,
    name="geo_ranges",
)


def _wildcards_well_placed(df: pd.DataFrame) -> pd.Series:
    """``*`` may stand for the campaign, the medium and campaign, or the source and campaign, never alone in
    the middle."""
    source, medium, campaign = (df[c] == CAMPAIGN_WILDCARD for c in UTM_FIELDS)
    return ~(source & medium) & (~medium | campaign) & (~source | campaign)


def _dates_ordered(df: pd.DataFrame) -> pd.Series:
    if "start_date" not in df or "end_date" not in df:
        return pd.Series(True, index=df.index)
    start, end = (
        pd.to_datetime(df["start_date"], errors="coerce"),
        pd.to_datetime(df["end_date"], errors="coerce"),
    )
    return start.isna() | end.isna() | (start <= end)


_UTM = pa.Check.str_length(1, 256)

CAMPAIGNS_SCHEMA = pa.DataFrameSchema(
    {
        "utm_source": pa.Column(str, checks=_UTM),
        "utm_medium": pa.Column(str, checks=_UTM),
        "utm_campaign": pa.Column(str, checks=_UTM),
        "campaign_id": pa.Column(str, unique=True, checks=pa.Check.str_matches(r"^[A-Za-z0-9_.:-]{1,128}$")),
        "name": pa.Column(str, checks=pa.Check.str_length(1, 256)),
        "channel": pa.Column(str, checks=pa.Check.isin(sorted(CHANNELS))),
        "start_date": pa.Column(pa.DateTime, coerce=True, nullable=True, required=False),
        "end_date": pa.Column(pa.DateTime, coerce=True, nullable=True, required=False),
    },
    checks=[
        pa.Check(_wildcards_well_placed, error="'*' allowed as (s, m, *), (s, *, *) or (*, m, *)"),
        pa.Check(_dates_ordered, error="end_date before start_date"),
    ],
    # Validated after the UTM values are normalized, so "Google" and "google" collide here.
    unique=["utm_source", "utm_medium", "utm_campaign"],
    strict=False,
    name="campaigns",
)
