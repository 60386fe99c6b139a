"""IP-range geo enrichment (pure): an IPv4 or IPv6 address -> country, region, city."""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from core.ip_address import parse_ip

logger = logging.getLogger(__name__)

SAMPLE_GEO = Path(__file__).resolve().parent.parent / "data" / "reference" / "geo_ranges.csv"
GEO_FIELDS = ("country", "region", "city")


@dataclass(frozen=True)
class _Ranges:
    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    places: list[Mapping[str, str]] = field(default_factory=list)

    def find(self, address: int) -> Mapping[str, str] | None:
        i = bisect_right(self.starts, address) - 1
        if i >= 0 and address <= self.ends[i]:
            return self.places[i]
        return None


@dataclass(frozen=True)
class GeoIndex:
    """An immutable geo version: sorted, non-overlapping ranges per IP version, looked up by bisection."""

    version: str = ""
    v4: _Ranges = field(default_factory=_Ranges)
    v6: _Ranges = field(default_factory=_Ranges)

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, str]], version: str = "") -> GeoIndex:
        """Build from rows with ``start_ip``, ``end_ip``, country, region, city.

        Rows are validated before they are published; here an unparsable or overlapping
        row is skipped (and logged), so a reader never fails on data it cannot use.
        """
        parsed: dict[int, list[tuple[int, int, Mapping[str, str]]]] = {4: [], 6: []}
        skipped = 0
        for row in rows:
            start, end = parse_ip(row.get("start_ip")), parse_ip(row.get("end_ip"))
            if start is None or end is None or start[0] != end[0] or start[1] > end[1]:
                skipped += 1
                continue
            place = MappingProxyType({name: row.get(name) or None for name in GEO_FIELDS})
            parsed[start[0]].append((start[1], end[1], place))
        tables = {}
        for ip_version, ranges in parsed.items():
            ranges.sort(key=lambda r: r[0])
            table = _Ranges()
            for start, end, place in ranges:
                if table.ends and start <= table.ends[-1]:
                    skipped += 1
                    continue
                table.starts.append(start)
                table.ends.append(end)
                table.places.append(place)
            tables[ip_version] = table
        if skipped:
            logger.warning(
                "geo %s: skipped %d invalid or overlapping range(s)", version or "(unversioned)", skipped
            )
        return cls(version, tables[4], tables[6])

    def __len__(self) -> int:
        return len(self.v4.starts) + len(self.v6.starts)

    def lookup(self, ip: object) -> Mapping[str, str] | None:
        """{country, region, city} of the range holding ``ip``, or None (unknown, private or not an IP)."""
        parsed = parse_ip(ip)
        if parsed is None:
            return None
        return (self.v4 if parsed[0] == 4 else self.v6).find(parsed[1])
