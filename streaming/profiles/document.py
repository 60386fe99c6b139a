"""Build the profile JSON of the contract from its stored parts (pure).

Stored parts, as kept in Redis (see ``streaming/profiles/update.lua``):
- ``fields``: flat hash. ``user_id``, ``updated_at`` (epoch ms), ``intent_score``, ``segments``,
  the latest session's bounds, and the trait registry's fields, which every field from
  ``first_seen`` to ``computed`` is read from (``streaming/traits/definition.py``,
  ``builtin_traits``): ``event_count``, ``first_seen``/``last_seen``, ``t:<type>``,
  ``v:<category>``, ``c:<product_id>``, ``purchase_micros``, ``engagement`` and the cells
  ``x<code>:...`` (``streaming/traits/cells.py``).
- ``anonymous_ids``: anonymous ids linked to a user; ``last_products``: most recent first;
  ``session_count``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from core.time_format import iso_from_ms
from streaming.traits.registry import BUILTIN_TRAITS, TraitSet

LAST_PRODUCTS_LIMIT = 10


def build_profile(
    profile_id: str,
    fields: Mapping[str, str],
    anonymous_ids: Iterable[str],
    last_products: Iterable[str],
    session_count: int,
    last_session: tuple[int, int] | None = None,
    traits: TraitSet = BUILTIN_TRAITS,
    now_ms: int | None = None,
) -> dict[str, Any]:
    """Assemble the contract's profile document from stored parts.

    ``last_session`` is the latest session's (start, end) in ms; by default the stored ``ss``/``se``.
    Trait fields are read with ``traits`` as of ``now_ms`` (default: now): windows and decay.
    """
    if last_session is None and "ss" in fields:
        last_session = (int(fields["ss"]), int(fields["se"]))
    user_id = fields.get("user_id") or None
    # An anonymous profile is keyed by its anonymous_id, which is not stored again.
    anonymous = set(anonymous_ids) if user_id else {*anonymous_ids, profile_id}
    return {
        "profile_id": profile_id,
        "user_id": user_id,
        "anonymous_ids": sorted(anonymous),
        **traits.profile_fields(fields, now() if now_ms is None else now_ms),
        "last_products": list(last_products)[:LAST_PRODUCTS_LIMIT],
        "session_count": session_count,
        "last_session": session_facts(last_session),
        # intent_score and segments are set by the intent model and rules (issue 4).
        "intent_score": float(fields.get("intent_score", 0.0)),
        "segments": sorted(s for s in fields.get("segments", "").split(",") if s),
        "updated_at": iso_from_ms(_int_or_none(fields.get("updated_at"))),
    }


def now() -> int:
    """The time trait fields are read at by default (epoch ms)."""
    return int(time.time() * 1000)


def session_facts(session: tuple[int, int] | None) -> dict[str, Any] | None:
    """The latest session as the profile shows it."""
    if session is None:
        return None
    start, end = session
    return {
        "started_at": iso_from_ms(start),
        "ended_at": iso_from_ms(end),
        "duration_seconds": (end - start) // 1000,
    }


def _int_or_none(value: str | None) -> int | None:
    return None if value is None else int(value)
