"""Turn a validated, enriched event into the profile change it causes (pure).

Every change is commutative (counters, min/max, set union, top-N by event time, session
interval merging), so a profile is the same whatever order its events arrive in; the
``event_id`` marker makes each change apply once. ``streaming/profiles/update.lua``
applies these deltas in Redis and ``streaming.profiles.reference`` in plain Python.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

from quality.event_contract import Event
from streaming.traits.ops import trait_ops
from streaming.traits.registry import BUILTIN_TRAITS, TraitSet

MICROS = 1_000_000

#: Points each event type adds to ``engagement_score``; custom types count as 1.
ENGAGEMENT_POINTS: dict[str, int] = {
    "page_view": 1,
    "click": 2,
    "search": 1,
    "add_to_cart": 4,
    "remove_from_cart": 0,
    "purchase": 10,
    "identify": 0,
}
DEFAULT_ENGAGEMENT_POINTS = 1


class ProfileDelta(NamedTuple):
    """What one event changes on its profile (a tuple: cheap to copy between stream branches)."""

    profile_id: str
    event_id: str
    event_type: str
    timestamp_ms: int
    user_id: str  # "" for an anonymous-only event
    anonymous_id: str  # linked to a user profile; "" when the event has no user_id or no anonymous_id
    category: str  # counted in category_views (page_view only), else ""
    product_id: str  # pushed on last_products, else ""
    cart_change: int  # +quantity add_to_cart, -quantity remove_from_cart / purchase
    purchase_micros: int  # price * quantity in millionths, purchases only
    engagement: int
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
    meta = event.metadata
    event_type = event.event_type
    product_id = meta.get("product_id") or ""
    quantity = meta.get("quantity") or 1
    cart_change = 0
    purchase_micros = 0
    if product_id:
        if event_type == "add_to_cart":
            cart_change = quantity
        elif event_type in ("remove_from_cart", "purchase"):
            cart_change = -quantity
    if event_type == "purchase":
        purchase_micros = round(meta["price"] * quantity * MICROS)
    return ProfileDelta(
        profile_id=event.profile_id,
        event_id=event.event_id,
        event_type=event_type,
        timestamp_ms=event.timestamp_ms,
        user_id=event.user_id or "",
        anonymous_id=(event.anonymous_id or "") if event.user_id else "",
        category=category if event_type == "page_view" else "",
        product_id=product_id,
        cart_change=cart_change,
        purchase_micros=purchase_micros,
        engagement=ENGAGEMENT_POINTS.get(event_type, DEFAULT_ENGAGEMENT_POINTS),
        ops=trait_ops(event, category, traits, int(time.time() * 1000) if now_ms is None else now_ms),
        marker=f"g{traits.generation}" if traits.generation else "1",
    )
