"""What a trait backfill sends to Redis, from archived events (pure).

For each profile: the events of the archive (each event_id once) with the cell ops the traits
being backfilled make of them, and whether the event reached the broker longer ago than the
dedupe window. ``update.lua``'s ``pulse_backfill`` decides per event, with the event's dedupe
marker, whether the stream already counted it for each trait (see
``streaming/traits/registration.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from enrichment.catalog import Catalog
from quality.event_contract import EventContractError, parse_event
from streaming.profiles.delta import event_category
from streaming.traits.cells import is_cell
from streaming.traits.ops import trait_ops
from streaming.traits.registry import TraitSet


class ArchivedRecord(NamedTuple):
    raw: bytes
    profile_id: str
    arrived_ms: int  # the broker's timestamp of the event's first record


def backfill_jobs(
    records: Iterable[ArchivedRecord],
    traits: TraitSet,
    live_generations: Mapping[str, int],
    catalog: Catalog,
    now_ms: int,
    arrived_long_ago_ms: int,
) -> dict[str, list[Any]]:
    """profile id -> its ``pulse_backfill`` argument: [{storage id: generation}, [[event_id, old, ops]]].

    Only the traits in ``live_generations`` (by storage id) are backfilled; ``arrived_long_ago_ms``
    is now minus the dedupe window: records older than it have lost their markers.
    """
    chosen = {trait.storage_id for trait in traits.cell_traits} & set(live_generations)
    generations = {sid: live_generations[sid] for sid in chosen}
    jobs: dict[str, list[Any]] = {}
    for record in records:
        try:
            event = parse_event(record.raw)
        except EventContractError:
            continue  # the archive marks it valid; a contract change may disagree: skip it
        category = event_category(event, catalog.category_of(event.metadata.get("product_id")))
        ops = trait_ops(event, category, traits, now_ms)
        tagged: list[Any] = []
        for i in range(0, len(ops), 4):
            if not is_cell(ops[i]):
                continue  # a built-in field: live since its first release, never backfilled
            sid = ops[i].split(":", 2)[1]
            if sid in chosen:
                tagged += (*ops[i : i + 4], sid)
        if not tagged:
            continue
        job = jobs.get(record.profile_id)
        if job is None:
            job = jobs[record.profile_id] = [generations, []]
        job[1].append([event.event_id, 1 if record.arrived_ms < arrived_long_ago_ms else 0, tagged])
    return jobs
