"""Reference-data assets: the product catalog the profile app enriches events with."""

from __future__ import annotations

import dagster as dg

from enrichment.catalog import SAMPLE_CATALOG, read_catalog_csv
from enrichment.reference_store import CATALOG, publish_reference
from orchestration.resources import RedisResource


@dg.asset(kinds={"redis", "csv"}, group_name="reference_data")
def product_catalog(redis: RedisResource) -> dg.MaterializeResult:
    """Publish data/reference/products.csv to Redis as a new version and switch the pointer."""
    rows = read_catalog_csv(SAMPLE_CATALOG)
    version = publish_reference(redis.client(), CATALOG, rows, "product_id")
    categories = sorted({row["category"] for row in rows})
    return dg.MaterializeResult(
        metadata={"version": version, "rows": len(rows), "categories": ", ".join(categories)}
    )
