"""Reference-data assets: the product catalog, IP-range geo and campaigns the profile app enriches events
with."""

from collections.abc import Callable, Iterator

import dagster as dg
import pandas as pd
from pydantic import Field

from core.resources import RedisResource
from enrichment.campaigns import SAMPLE_CAMPAIGNS, WILDCARD
from enrichment.catalog import SAMPLE_CATALOG
from enrichment.geo import SAMPLE_GEO
from enrichment.reference_publish import (
    CAMPAIGNS_SPEC,
    CATALOG_SPEC,
    GEO_SPEC,
    ReferenceInvalid,
    ReferenceSpec,
    failure_summary,
    is_url,
    validate_and_publish,
)

CHECK = "no_rejected_rows"
SOURCE_HELP = "A CSV file path or an http(s) URL serving one."


class CatalogConfig(dg.Config):
    path: str = Field(
        str(SAMPLE_CATALOG), description=f"{SOURCE_HELP} Columns product_id and category (price optional)."
    )


class GeoConfig(dg.Config):
    source: str = Field(
        str(SAMPLE_GEO), description=f"{SOURCE_HELP} Columns start_ip, end_ip, country, region, city."
    )


class CampaignsConfig(dg.Config):
    source: str = Field(
        str(SAMPLE_CAMPAIGNS),
        description=f"{SOURCE_HELP} Columns utm_source, utm_medium, utm_campaign, "
        "campaign_id, name, channel.",
    )


def _rows_check(asset: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        CHECK,
        asset=asset,
        description="Every row passed the Pandera schema; otherwise nothing was published.",
    )


def _publish(
    spec: ReferenceSpec, source: str, redis: RedisResource, stats: Callable[[pd.DataFrame], dict[str, object]]
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Validate and publish, reporting rows and rejects on the check; a bad file fails the run and publishes
    nothing."""
    source_meta = dg.MetadataValue.url(source) if is_url(source) else dg.MetadataValue.path(source)
    try:
        published = validate_and_publish(redis.client(), spec, source)
    except ReferenceInvalid as exc:
        failures = dg.MetadataValue.md(failure_summary(exc.failures).to_markdown(index=False))
        yield dg.AssetCheckResult(
            check_name=CHECK,
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"rows": exc.rows, "rejects": exc.rejects, "source": source_meta, "failures": failures},
            description=str(exc),
        )
        raise dg.Failure(str(exc), metadata={"failures": failures}) from None
    frame = published.frame
    yield dg.MaterializeResult(
        metadata={
            "version": published.version,
            "previous_version": published.previous_version or "-",
            "rows": len(frame),
            "source": source_meta,
            **stats(frame),
        }
    )
    yield dg.AssetCheckResult(
        check_name=CHECK,
        passed=True,
        metadata={"rows": len(frame), "rejects": 0, "version": published.version},
    )


@dg.asset(
    kinds={"redis", "csv", "pandera"},
    group_name="reference_data",
    check_specs=[_rows_check("product_catalog")],
)
def product_catalog(config: CatalogConfig, redis: RedisResource):
    """Validate the catalog CSV (Pandera), then publish it to Redis as a new version and switch the pointer.

    A file that fails validation publishes nothing: the live version stays as it was.
    """
    yield from _publish(
        CATALOG_SPEC, config.path, redis, lambda f: {"categories": ", ".join(sorted(f["category"].unique()))}
    )


def _geo_stats(frame: pd.DataFrame) -> dict[str, object]:
    ipv6 = frame["start_ip"].str.contains(":")
    return {
        "ipv4_ranges": int((~ipv6).sum()),
        "ipv6_ranges": int(ipv6.sum()),
        "countries": int(frame["country"].nunique()),
    }


@dg.asset(
    kinds={"redis", "csv", "pandera"}, group_name="reference_data", check_specs=[_rows_check("geo_ranges")]
)
def geo_ranges(config: GeoConfig, redis: RedisResource):
    """IP ranges (IPv4 and IPv6) -> country, region, city; validated (valid IPs, no overlaps), then published
    as a new version.

    The profile app looks up ``metadata.ip`` by bisection over the sorted ranges
    (``enrichment/geo.py``) and follows new versions without restart.
    """
    yield from _publish(GEO_SPEC, config.source, redis, _geo_stats)


def _campaign_stats(frame: pd.DataFrame) -> dict[str, object]:
    fallback = frame["utm_campaign"] == WILDCARD
    return {
        "campaigns": int((~fallback).sum()),
        "fallback_rows": int(fallback.sum()),
        "channels": ", ".join(sorted(frame["channel"].unique())),
    }


@dg.asset(
    kinds={"redis", "csv", "pandera"}, group_name="reference_data", check_specs=[_rows_check("campaigns")]
)
def campaigns(config: CampaignsConfig, redis: RedisResource):
    """UTM (source, medium, campaign) -> campaign; validated (unique keys and ids, known channels), then
    published as a new version.

    Lookups try the exact triple, then (source, medium, *), (source, *, *) and (*, medium, *)
    (``enrichment/campaigns.py``).
    """
    yield from _publish(CAMPAIGNS_SPEC, config.source, redis, _campaign_stats)
