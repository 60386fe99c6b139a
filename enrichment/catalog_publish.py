"""Validate a catalog file and publish it as a new version (I/O); one path for Dagster and `pulse up`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import redis

from enrichment.reference_publish import CATALOG_SPEC, ReferenceInvalid, validate_and_publish


class CatalogInvalid(ReferenceInvalid):
    """The catalog file failed validation; nothing was published."""


def validate_and_publish_catalog(client: redis.Redis, path: Path | str) -> tuple[str, pd.DataFrame]:
    """Publish ``path`` (a file or an http(s) URL) when it passes the Pandera schema; return
    (version, rows)."""
    try:
        published = validate_and_publish(client, CATALOG_SPEC, path)
    except ReferenceInvalid as exc:
        raise CatalogInvalid(str(exc), exc.failures, exc.rows, exc.rejects) from None
    return published.version, published.frame
