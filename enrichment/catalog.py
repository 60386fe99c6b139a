"""Product catalog enrichment (pure): product_id -> category and other attributes."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

SAMPLE_CATALOG = Path(__file__).resolve().parent.parent / "data" / "reference" / "products.csv"


@dataclass(frozen=True)
class Catalog:
    """An immutable catalog version; lookups never see a half-loaded dataset."""

    version: str = ""
    categories: Mapping[str, str] = field(default_factory=dict)

    def category_of(self, product_id: object) -> str | None:
        """Category of a product, or None when the product is unknown."""
        if not isinstance(product_id, str):
            return None
        return self.categories.get(product_id)


def read_catalog_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a catalog CSV with at least ``product_id`` and ``category`` columns."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    missing = {"product_id", "category"} - set(rows[0].keys() if rows else ())
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    return rows


def categories_from_rows(rows: Iterable[Mapping[str, str]]) -> dict[str, str]:
    return {
        row["product_id"]: row["category"] for row in rows if row.get("product_id") and row.get("category")
    }
