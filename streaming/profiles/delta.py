"""Turn a validated, enriched event into the profile change it causes (pure).

Every change is commutative (trait cells from the registry, set union, top-N by event time,
session interval merging), so a profile is the same whatever order its events arrive in; the
``event_id`` marker makes each change apply once. ``streaming/profiles/update.lua``
applies these deltas in Redis and ``streaming.profiles.reference`` in plain Python.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

from quality.event_contract import Event
from streaming.traits.ops import trait_ops
from streaming.traits.registry import BUILTIN_TRAITS, TraitSet


class ProfileDelta(NamedTuple):
    """What one event changes on its profile (a tuple: cheap to copy between stream branches)."""

    profile_id: str
    event_id: str
    event_type: str
    timestamp_ms: int
    user_id: str  # "" for an anonymous-only event
    anonymous_id: str  # linked to a user profile; "" when the event has no user_id or no anonymous_id
    category: str  # its resolved category when a page_view, else "" (the rules' event.category)
    product_id: str  # pushed on last_products, else ""
    ops: tuple[Any, ...] = ()  # trait cell ops, flat (see streaming/traits/ops.py)
    marker: str = "1"  # the dedupe marker's value: g<generation> of the traits it was computed with


def event_category(event: Event, catalog_category: str | None) -> str:
    """Category of an event: metadata.category, else the catalog's for metadata.product_id."""
    category = event.metadata.get("category")
    if isinstance(category, str) and category:
        return category
    return catalog_category or ""


def profile_delta(
    event: Event, category: str, traits: TraitSet = BUILTIN_TRAITS, now_ms: int | None = None
) -> ProfileDelta:
    """Compute the delta of a validated event; ``category`` comes from ``event_category``.

    ``traits`` are the traits it updates, windows judged at ``now_ms`` (default: now).
    """
    user_id, event_type, generation = event.user_id, event.event_type, traits.generation
    return ProfileDelta(  # positional, in field order: this runs for every event
        user_id or event.anonymous_id,  # the profile id (Event.profile_id)
        event.event_id,
        event_type,
        event.timestamp_ms,
        user_id or "",
        (event.anonymous_id or "") if user_id else "",
        category if event_type == "page_view" else "",
        event.metadata.get("product_id") or "",
        trait_ops(event, category, traits, int(time.time() * 1000) if now_ms is None else now_ms),
        f"g{generation}" if generation else "1",
    )
