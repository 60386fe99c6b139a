"""Read the archived dead letters (``dead_letters/``) with DuckDB: per-reason summaries and records."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb

from assets.dead_letter_fixes import reason_kind
from assets.dead_letter_ledger import Coordinates
from core.archive_layout import dead_letter_records_sql, has_dead_letters


@dataclass(frozen=True)
class DeadLetter:
    """One archived dead letter."""

    coordinates: Coordinates
    raw: bytes
    error: str
    source: str
    received_at: datetime | None


@dataclass
class ReasonSummary:
    """How many dead letters share a reason (values taken out), by source, with a few samples."""

    reason: str
    count: int = 0
    sources: Counter[str] = field(default_factory=Counter)
    samples: list[DeadLetter] = field(default_factory=list)


def _where(reason: str | None, source: str | None, since: datetime | None) -> tuple[str, list[object]]:
    conditions, params = ["TRUE"], []
    if reason is not None:
        conditions.append("contains(lower(error), lower(?))")
        params.append(reason)
    if source is not None:
        conditions.append("source = ?")
        params.append(source)
    if since is not None:
        conditions.append("kafka_timestamp >= ?")
        params.append(since)
    return " AND ".join(conditions), params


def read_dead_letters(
    root: Path, *, reason: str | None = None, source: str | None = None, since: datetime | None = None
) -> list[DeadLetter]:
    """Archived dead letters (``reason``: a case-insensitive part of the error), in DLQ order."""
    if not has_dead_letters(root):
        return []
    where, params = _where(reason, source, since)
    query = (
        "SELECT kafka_topic, kafka_partition, kafka_offset, raw, error, source, received_at "
        f"FROM ({dead_letter_records_sql(root, where)}) ORDER BY kafka_topic, kafka_partition, kafka_offset"
    )
    with duckdb.connect() as con:
        rows = con.execute(query, params).fetchall()
    return [
        DeadLetter(Coordinates(t, int(p), int(o)), bytes(raw), error or "", src or "unknown", at)
        for t, p, o, raw, error, src, at in rows
    ]


def summarize_dead_letters(
    root: Path, *, samples: int = 3, source: str | None = None, since: datetime | None = None
) -> list[ReasonSummary]:
    """Archived dead letters grouped by ``reason_kind``, most frequent first, with the latest samples.

    DuckDB groups by exact error (and source) and keeps each group's latest samples, so only
    one row per distinct error reaches Python, however large the DLQ.
    """
    if not has_dead_letters(root):
        return []
    where, params = _where(None, source, since)
    query = (
        "SELECT error, source, count(*), list(struct_pack(t := kafka_topic, p := kafka_partition, "
        "o := kafka_offset, raw := raw, at := received_at) ORDER BY kafka_timestamp DESC, kafka_offset DESC)"
        f"[1:{int(samples)}] FROM ({dead_letter_records_sql(root, where)}) GROUP BY ALL"
    )
    with duckdb.connect() as con:
        rows = con.execute(query, params).fetchall()
    groups: dict[str, ReasonSummary] = {}
    for error, src, count, latest in rows:
        summary = groups.setdefault(reason_kind(error), ReasonSummary(reason_kind(error)))
        summary.count += count
        summary.sources[src or "unknown"] += count
        summary.samples += [
            DeadLetter(
                Coordinates(s["t"], s["p"], s["o"]), bytes(s["raw"]), error or "", src or "unknown", s["at"]
            )
            for s in latest or []
        ]
    for summary in groups.values():
        summary.samples.sort(key=_age, reverse=True)
        del summary.samples[samples:]
    return sorted(groups.values(), key=lambda s: (-s.count, s.reason))


def _age(letter: DeadLetter) -> tuple[float, int, int]:
    """Sort key, newest last: arrival, then place in the DLQ (dead letters of one instant)."""
    at = letter.received_at.timestamp() if letter.received_at else float("-inf")
    return at, letter.coordinates.partition, letter.coordinates.offset
