"""Turn an event into the trait cell ops it causes (pure, on the profile app's hot path).

Ops are flat: ``(field, code, value, keep, ...)``, applied once per event_id by ``update.lua``
(and ``streaming.traits.cells.apply_ops`` in Python). A windowed trait skips events older than
its window (they can never be read again); its ops carry ``keep``, the first day the longest
window of the trait set still reads (0 for traits without a window). The profile keeps its
oldest windowed day in the field ``w``; once that day is before ``keep``, the cells of days
before ``keep`` are dropped, so memory per profile stays bounded by the longest window.
"""

from __future__ import annotations

from typing import Any

from quality.event_contract import Event
from streaming.traits.definition import DAY_MS
from streaming.traits.registry import TraitSet


def trait_ops(event: Event, category: str, traits: TraitSet, now_ms: int) -> tuple[Any, ...]:
    """The cell ops of ``event``; ``category`` is its resolved category ('' when none)."""
    fixed, measured, computed = traits.for_type(event.event_type)
    if not measured and not computed:
        return fixed
    ops: list[Any] = list(fixed)
    for name, code, measure in measured:
        value = measure(event)
        if value is not None:
            ops += (name, code, value, 0)
    if not computed:
        return tuple(ops)
    day = event.timestamp_ms // DAY_MS
    today = now_ms // DAY_MS
    metadata = event.metadata
    for guard, step in computed:  # the rule above, compiled per trait (streaming/traits/steps.py)
        if guard is not None and guard not in metadata:
            continue
        found = step(event, category, day, today)
        if found:
            ops += found
    return tuple(ops)
