"""Campaign enrichment (pure): utm_source, utm_medium, utm_campaign -> the campaign they belong to."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from quality.campaign_format import CAMPAIGN_WILDCARD as WILDCARD
from quality.campaign_format import UTM_FIELDS

logger = logging.getLogger(__name__)

SAMPLE_CAMPAIGNS = Path(__file__).resolve().parent.parent / "data" / "reference" / "campaigns.csv"
#: Tried in this order; a row with ``*`` matches any value in that position.
FALLBACKS = (
    ("exact", lambda s, m, c: (s, m, c)),
    ("source_medium", lambda s, m, c: (s, m, WILDCARD)),
    ("source", lambda s, m, c: (s, WILDCARD, WILDCARD)),
    ("medium", lambda s, m, c: (WILDCARD, m, WILDCARD)),
)


def normalize_utm(value: object) -> str:
    """UTM values compare case-insensitively with surrounding and repeated blanks ignored."""
    if not isinstance(value, str):
        return ""
    return " ".join(value.split()).casefold()


def campaign_key(source: object, medium: object, campaign: object) -> str:
    """The unique key of a campaign row (JSON of the normalized triple, so no separator can collide)."""
    return json.dumps(
        [normalize_utm(source), normalize_utm(medium), normalize_utm(campaign)], ensure_ascii=False
    )


@dataclass(frozen=True)
class CampaignIndex:
    """An immutable campaigns version: normalized (source, medium, campaign) -> campaign attributes."""

    version: str = ""
    by_key: Mapping[tuple[str, str, str], Mapping[str, str]] = field(default_factory=dict)

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, str]], version: str = "") -> CampaignIndex:
        """Build from rows with the three UTM columns and ``campaign_id`` (other columns become
        attributes)."""
        by_key: dict[tuple[str, str, str], Mapping[str, str]] = {}
        skipped = 0
        for row in rows:
            key = tuple(normalize_utm(row.get(name)) for name in UTM_FIELDS)
            if not key[0] and not key[1] or not row.get("campaign_id") or key in by_key:
                skipped += 1
                continue
            by_key[key] = MappingProxyType(
                {k: (v if v != "" else None) for k, v in row.items() if k not in UTM_FIELDS}
            )  # type: ignore[index]
        if skipped:
            logger.warning(
                "campaigns %s: skipped %d row(s) without keys or duplicated",
                version or "(unversioned)",
                skipped,
            )
        return cls(version, by_key)

    def __len__(self) -> int:
        return len(self.by_key)

    def lookup(
        self, source: object, medium: object, campaign: object
    ) -> tuple[Mapping[str, str], str] | None:
        """(campaign attributes, how it matched) or None; tries exact, then (source, medium, *),
        (source, *, *), (*, medium, *)."""
        s, m, c = normalize_utm(source), normalize_utm(medium), normalize_utm(campaign)
        if not s and not m:
            return None
        for match, key in FALLBACKS:
            found = self.by_key.get(key(s, m, c))
            if found is not None:
                return found, match
        return None
