"""Which traits a backfill takes, and what it sends per profile (pure)."""

from __future__ import annotations

import json
import uuid

import pytest

from assets.trait_backfill import TraitBackfillError, choose_traits
from enrichment.catalog import Catalog
from streaming.traits.backfill import ArchivedRecord, backfill_jobs
from streaming.traits.loader import parse_traits

TRAITS = parse_traits(
    """
traits:
  views: {kind: count, on: [page_view]}
  spend: {kind: sum, on: [purchase], field: metadata.price}
"""
)
VIEWS, SPEND = TRAITS.computed
NOW = 1_773_135_000_000


def test_by_default_every_live_trait_not_backfilled_yet():
    live = [VIEWS.storage_id, SPEND.storage_id]
    assert choose_traits(TRAITS.computed, live, [VIEWS.storage_id], []) == [SPEND]
    assert choose_traits(TRAITS.computed, [], [], []) == []


def test_named_traits_must_be_declared_and_live():
    with pytest.raises(TraitBackfillError, match="not declared in the traits file: nope"):
        choose_traits(TRAITS.computed, [], [], ["nope"])
    with pytest.raises(TraitBackfillError, match="not live yet: spend"):
        choose_traits(TRAITS.computed, [VIEWS.storage_id], [], ["spend"])
    assert choose_traits(TRAITS.computed, [SPEND.storage_id], [SPEND.storage_id], ["spend"]) == [SPEND]


def _record(event_type: str, user: str, arrived: int, **metadata) -> ArchivedRecord:
    event = {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "user_id": user,
        "timestamp": "2026-03-10T09:00:00.000Z",
        "metadata": metadata,
    }
    return ArchivedRecord(json.dumps(event).encode(), user, arrived)


def test_jobs_carry_only_the_chosen_traits_ops_and_whether_markers_expired():
    records = [
        _record("purchase", "u1", NOW - 10, order_id="o", price=2.5),
        _record("page_view", "u1", NOW - 10),  # no op of the chosen trait: not sent
        _record("purchase", "u2", NOW - 10**10, order_id="o", price=1),
    ]
    jobs = backfill_jobs(records, TRAITS, {SPEND.storage_id: 4}, Catalog(), NOW, NOW - 10**9)
    assert set(jobs) == {"u1", "u2"}
    generations, events = jobs["u1"]
    assert generations == {SPEND.storage_id: 4}
    ((event_id, old, ops),) = events
    assert old == 0 and ops[1:] == ["n", 2_500_000, 0, SPEND.storage_id]
    assert jobs["u2"][1][0][1] == 1  # arrived before the dedupe window: its marker has expired
