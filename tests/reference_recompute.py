"""Test oracle: profiles recomputed from archived events with exactly the stream's semantics (pure).

It runs the profile app's own ``check_record`` (the same validation, enrichment and delta)
and the reference arithmetic that ``update.lua`` is tested against, so a live profile that
differs from its recompute is drift, never a difference of definitions. Production recomputes
in DuckDB SQL (``assets/batch_sql.py``); the property tests hold the two equal.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from core.forgetting import Suppressions, is_forgotten
from enrichment.catalog import Catalog
from streaming.profile_app.pipeline import check_record
from streaming.profiles.admission import Admission
from streaming.profiles.reference import reference_profiles
from streaming.traits.registry import BUILTIN_TRAITS, TraitSet


def recompute_profiles(
    raw_events: Iterable[bytes],
    catalog: Catalog,
    session_gap_ms: int,
    forgotten: Suppressions | None = None,
    traits: TraitSet = BUILTIN_TRAITS,
    now_ms: int | None = None,
    admission: Admission = Admission(),
) -> dict[str, dict[str, Any]]:
    """Profile documents (without ``updated_at``) keyed by profile id, traits read at ``now_ms``;
    events ``forgotten`` by the forget rule left out."""
    deltas = []
    for raw in raw_events:
        checked = check_record(raw, catalog, traits, now_ms, admission=admission)
        delta = checked.delta
        if delta is not None and not is_forgotten(delta.profile_id, delta.timestamp_ms, forgotten or {}):
            deltas.append(checked.delta)
    documents = {}
    for profile_id, profile in reference_profiles(deltas, session_gap_ms).items():
        document = profile.document(traits, now_ms)
        document.pop("updated_at")
        documents[profile_id] = document
    return documents
