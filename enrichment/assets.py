"""Reference-data assets: the product catalog the profile app enriches events with."""

import dagster as dg
import pandas as pd
import pandera.errors

from enrichment.catalog import SAMPLE_CATALOG
from enrichment.reference_store import CATALOG, current_version, publish_reference
from orchestration.resources import RedisResource
from quality.reference_schemas import CATALOG_SCHEMA


class CatalogConfig(dg.Config):
    path: str = str(SAMPLE_CATALOG)  # a CSV with product_id and category columns (price optional)


@dg.asset(kinds={"redis", "csv", "pandera"}, group_name="reference_data")
def product_catalog(config: CatalogConfig, redis: RedisResource) -> dg.MaterializeResult:
    """Validate the catalog CSV (Pandera), then publish it to Redis as a new version and switch the pointer.

    A file that fails validation publishes nothing: the live version stays as it was.
    """
    frame = pd.read_csv(config.path, dtype={"product_id": str, "category": str})
    try:
        CATALOG_SCHEMA.validate(frame, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        cases = exc.failure_cases
        live = current_version(redis.client(), CATALOG)
        raise dg.Failure(
            f"{config.path} failed validation ({len(cases)} problem(s)); the live catalog stays {live}",
            metadata={"failures": dg.MetadataValue.md(cases.head(20).to_markdown() if hasattr(cases, "to_markdown") else str(cases.head(20)))},
        ) from None
    rows = frame.fillna("").astype(str).to_dict("records")
    version = publish_reference(redis.client(), CATALOG, rows, "product_id")
    return dg.MaterializeResult(
        metadata={"version": version, "rows": len(rows), "categories": ", ".join(sorted(frame["category"].unique()))}
    )
