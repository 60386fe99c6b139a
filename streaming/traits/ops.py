"""Turn an event into the trait cell ops it causes (pure, on the profile app's hot path).

Ops are flat: ``(field, code, value, keep, ...)``, applied once per event_id by ``update.lua``
(and ``streaming.traits.cells.apply_ops`` in Python). A windowed trait skips events older than
its window (they can never be read again); its ops carry ``keep``, the first day the longest
window of the trait set still reads (0 for traits without a window). The profile keeps its
oldest windowed day in the field ``w``; once that day is before ``keep``, the cells of days
before ``keep`` are dropped, so memory per profile stays bounded by the longest window.
"""

from __future__ import annotations

import json
from typing import Any

from quality.event_contract import Event
from streaming.traits.cells import MICROS, cell_field
from streaming.traits.definition import DAY_MS
from streaming.traits.registry import CompiledTrait, TraitSet
from streaming.traits.where import MISSING, json_kind


def trait_ops(event: Event, category: str, traits: TraitSet, now_ms: int) -> tuple[Any, ...]:
    """The cell ops of ``event``; ``category`` is its resolved category ('' when none)."""
    compiled = traits.for_type(event.event_type)
    if not compiled:
        return ()
    ops: list[Any] = []
    day = event.timestamp_ms // DAY_MS
    today = now_ms // DAY_MS
    for entry in compiled:
        trait = entry.trait
        keep = 0
        if trait.window_days:
            if day <= today - trait.window_days:
                continue
            keep = today - traits.longest_window_days + 1
        if entry.predicate is not None and entry.predicate(event, category) is not True:
            continue
        cell_day = day if trait.window_days else None
        for key, value in _cell_values(entry, event, category):
            ops += (_field(trait, cell_day, key), trait.code, value, keep)
    return tuple(ops)


_FIELDS: dict[tuple[str, int | None, str], str] = {}


def _field(trait: Any, day: int | None, key: str) -> str:
    """``cell_field``, remembered: the same few names recur on every event."""
    found = _FIELDS.get((trait.storage_id, day, key))
    if found is None:
        if len(_FIELDS) > 100_000:
            _FIELDS.clear()
        found = _FIELDS[(trait.storage_id, day, key)] = cell_field(trait, day, key)
    return found


def _cell_values(entry: CompiledTrait, event: Event, category: str) -> list[tuple[str, Any]]:
    """(cell key, op value) pairs of one trait for one event; [] when it contributes nothing."""
    trait = entry.trait
    key = ""
    if trait.keyed_by == "event_type":
        key = event.event_type
    elif trait.keyed_by == "category":
        if not category:
            return []
        key = category
    kind = trait.kind
    if kind == "count":
        return [(key, 1)]
    if kind == "decayed":
        return [(key, repr(event.timestamp_ms / trait.half_life_ms))]
    value = entry.read_field(event, category) if entry.read_field else MISSING
    if value is MISSING or value is None:
        return []
    if trait.keyed_by == "each":
        if not isinstance(value, dict):
            return []
        return [(k, _ordered(event, v)) for k, v in sorted(value.items()) if v is not None]
    if kind in ("first", "last"):
        return [(key, _ordered(event, value))]
    if json_kind(value) != "number":
        return []
    if kind == "sum":
        return [(key, round(float(value) * MICROS))]
    return [(key, repr(float(value)))]


def _ordered(event: Event, value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return f"{event.timestamp_ms}:{event.event_id}:{text}"
