"""The profile app's dataflow: validate -> enrich -> delta, invalid records to the DLQ (pure).

Reads top to bottom: every raw record is checked; rejected ones go to the dead-letter topic
with their original bytes and the reason; valid ones become profile deltas for the sink,
which applies them in Redis once per ``event_id``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from quixstreams.dataframe import StreamingDataFrame
from quixstreams.models import Topic
from quixstreams.sinks import BaseSink

from enrichment.catalog import Catalog
from quality.event_contract import EventContractError, parse_event
from streaming.dlq import dlq_headers
from streaming.profiles.delta import ProfileDelta, event_category, profile_delta

DLQ_SOURCE = "profile-app"


@dataclass(frozen=True, slots=True)
class CheckedRecord:
    """A raw record after validation: a delta, or the reason it was rejected."""

    raw: bytes
    delta: ProfileDelta | None = None
    error: str | None = None


def check_record(raw: bytes | None, catalog: Catalog) -> CheckedRecord:
    """Validate and enrich one raw topic record; never raises for bad input."""
    if raw is None:
        return CheckedRecord(b"", error="empty record (null value)")
    try:
        event = parse_event(raw)
    except EventContractError as exc:
        return CheckedRecord(raw, error=str(exc))
    category = event_category(event, catalog.category_of(event.metadata.get("product_id")))
    return CheckedRecord(raw, delta=profile_delta(event, category))


def build_pipeline(
    sdf: StreamingDataFrame,
    *,
    catalog: Callable[[], Catalog],
    dlq_topic: Topic,
    profile_sink: BaseSink,
) -> StreamingDataFrame:
    """Wire the profile dataflow onto ``sdf`` (a stream of raw bytes)."""
    checked = sdf.apply(lambda raw: check_record(raw, catalog()))

    rejected = checked.filter(lambda record: record.error is not None)
    rejected = rejected.set_headers(
        lambda record, _key, _ts, _headers: dlq_headers(record.error, DLQ_SOURCE, _now_iso())
    )
    rejected.apply(lambda record: record.raw).to_topic(dlq_topic)

    deltas = checked.filter(lambda record: record.error is None).apply(lambda record: record.delta)
    deltas.sink(profile_sink)
    return checked


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
