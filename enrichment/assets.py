"""Reference-data assets: the product catalog the profile app enriches events with."""

import dagster as dg

from enrichment.catalog import SAMPLE_CATALOG
from enrichment.catalog_publish import CatalogInvalid, validate_and_publish_catalog
from orchestration.resources import RedisResource


class CatalogConfig(dg.Config):
    path: str = str(SAMPLE_CATALOG)  # a CSV with product_id and category columns (price optional)


@dg.asset(kinds={"redis", "csv", "pandera"}, group_name="reference_data")
def product_catalog(config: CatalogConfig, redis: RedisResource) -> dg.MaterializeResult:
    """Validate the catalog CSV (Pandera), then publish it to Redis as a new version and switch the pointer.

    A file that fails validation publishes nothing: the live version stays as it was.
    """
    try:
        version, frame = validate_and_publish_catalog(redis.client(), config.path)
    except CatalogInvalid as exc:
        raise dg.Failure(str(exc), metadata={"failures": dg.MetadataValue.md(exc.failures.head(20).to_markdown())}) from None
    return dg.MaterializeResult(
        metadata={"version": version, "rows": len(frame), "categories": ", ".join(sorted(frame["category"].unique()))}
    )
