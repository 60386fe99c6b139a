"""Built-in event measures: the integers the built-in profile adds up, in Python and in SQL (pure).

A measure is what a built-in trait takes from an event where a user trait names a ``field``:
the cart change of a product event, a purchase's amount in millionths, the engagement points
of an event type, the event time. Each is written twice, side by side, so the stream and the
DuckDB recompute cannot drift apart: ``python`` reads a validated event (None: the event adds
nothing), ``sql`` is an expression over the archive's ``profile_events`` columns (``event_type``,
``ts``, and ``m``, the metadata struct of ``assets/batch_sql.py``), NULL where Python gives None.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from streaming.traits.cells import MICROS

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
#: Event types that change the cart: add_to_cart adds its quantity, the others take it away.
CART_SIGNS = {"add_to_cart": 1, "remove_from_cart": -1, "purchase": -1}


@dataclass(frozen=True)
class Measure:
    """An integer per event, in Python and in DuckDB SQL."""

    python: Callable[[Any], int | None]
    sql: str
    #: The value depends on the event type alone (its ops can be computed once per type).
    by_type: bool = False


def _cart_change(event: Any) -> int | None:
    sign = CART_SIGNS.get(event.event_type)
    meta = event.metadata
    if sign is None or not meta.get("product_id"):
        return None
    return sign * (meta.get("quantity") or 1)


def _purchase_micros(event: Any) -> int | None:
    meta = event.metadata
    return round(meta["price"] * (meta.get("quantity") or 1) * MICROS)


def _engagement(event: Any) -> int | None:
    return ENGAGEMENT_POINTS.get(event.event_type, DEFAULT_ENGAGEMENT_POINTS) or None


_SIGNS_SQL = " ".join(f"WHEN '{t}' THEN {s}" for t, s in CART_SIGNS.items())
_POINTS_SQL = " ".join(f"WHEN '{t}' THEN {p}" for t, p in ENGAGEMENT_POINTS.items())

MEASURES: dict[str, Measure] = {
    "timestamp_ms": Measure(lambda event: event.timestamp_ms, "ts"),
    "cart_change": Measure(
        _cart_change,
        f"CASE WHEN coalesce(m.product_id, '') = '' THEN NULL "
        f"ELSE (CASE event_type {_SIGNS_SQL} END) * coalesce(m.quantity, 1) END",
    ),
    "purchase_micros": Measure(
        _purchase_micros, f"round_even(m.price * coalesce(m.quantity, 1) * {MICROS}, 0)::BIGINT"
    ),
    "engagement_points": Measure(
        _engagement,
        f"nullif(CASE event_type {_POINTS_SQL} ELSE {DEFAULT_ENGAGEMENT_POINTS} END, 0)",
        by_type=True,
    ),
}
