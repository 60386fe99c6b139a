"""The profile app's dataflow: raw record -> validate -> enrich -> delta -> sink (pure).

Every raw record becomes a ``CheckedRecord``: a profile delta, or the reason it was
rejected. One sink takes both, at each checkpoint and before offsets commit: deltas go to
Redis (once per ``event_id``) and rejects to the dead-letter topic with their original bytes.
The stream is deliberately not split into two Quix branches: a branch point pickles every
value, which cost more than the whole validation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from quixstreams.dataframe import StreamingDataFrame
from quixstreams.sinks import BaseSink

from enrichment.catalog import Catalog
from quality.event_contract import Event, EventContractError, parse_event
from streaming.profiles.admission import Admission
from streaming.profiles.delta import ProfileDelta, event_category, profile_delta
from streaming.traits.registry import BUILTIN_TRAITS, TraitSet


class CheckedRecord(NamedTuple):
    """A raw record after validation: a delta, or the reason it was rejected."""

    raw: bytes
    delta: ProfileDelta | None = None
    error: str | None = None
    event: Event | None = None  # the rules engine reads it
    #: Why a valid event stays out of profiles and rules ("bot", "no_consent": ``Admission``).
    skipped: str | None = None


def check_record(
    raw: bytes | None,
    catalog: Catalog,
    traits: TraitSet = BUILTIN_TRAITS,
    now_ms: int | None = None,
    *,
    admission: Admission = Admission(),
) -> CheckedRecord:
    """Validate and enrich one raw topic record; never raises for bad input.

    ``traits`` windows are judged at ``now_ms`` (default: now). An event that ``admission``
    refuses (a bot's, one without consent) is skipped; the archive keeps it either way.
    """
    if raw is None:
        return CheckedRecord(b"", error="empty record (null value)")
    try:
        event = parse_event(raw)
    except EventContractError as exc:
        return CheckedRecord(raw, error=str(exc))
    refusal = admission.refusal(event)
    if refusal is not None:
        return CheckedRecord(raw, event=event, skipped=refusal)
    category = event.metadata.get("category")
    if not (isinstance(category, str) and category):  # event_category, the catalog read only when needed
        category = event_category(event, catalog.category_of(event.metadata.get("product_id")))
    return CheckedRecord(raw, delta=profile_delta(event, category, traits, now_ms), event=event)


def build_pipeline(
    sdf: StreamingDataFrame,
    *,
    catalog: Callable[[], Catalog],
    sink: BaseSink,
    traits: Callable[[], TraitSet] = lambda: BUILTIN_TRAITS,
    admission: Admission = Admission(),
) -> StreamingDataFrame:
    """Wire the profile dataflow onto ``sdf`` (a stream of raw bytes); ``traits`` are the current ones."""
    checked = sdf.apply(lambda raw: check_record(raw, catalog(), traits(), admission=admission))
    checked.sink(sink)
    return checked
