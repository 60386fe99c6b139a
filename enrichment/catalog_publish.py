"""Validate a catalog file and publish it as a new version (I/O); one path for Dagster and `pulse up`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pandera.errors
import redis

from enrichment.reference_store import CATALOG, current_version, publish_reference
from quality.reference_schemas import CATALOG_SCHEMA


class CatalogInvalid(ValueError):
    """The catalog file failed validation; nothing was published."""

    def __init__(self, message: str, failures: pd.DataFrame) -> None:
        super().__init__(message)
        self.failures = failures


def validate_and_publish_catalog(client: redis.Redis, path: Path) -> tuple[str, pd.DataFrame]:
    """Publish ``path`` when it passes the Pandera schema; return (version, rows)."""
    frame = pd.read_csv(path, dtype={"product_id": str, "category": str})
    try:
        CATALOG_SCHEMA.validate(frame, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        live = current_version(client, CATALOG)
        raise CatalogInvalid(f"{path} failed validation ({len(exc.failure_cases)} problem(s)); the live catalog stays {live}", exc.failure_cases) from None
    version = publish_reference(client, CATALOG, frame.fillna("").astype(str).to_dict("records"), "product_id")
    return version, frame
