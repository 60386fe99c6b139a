"""One trait's ops for events of one type, compiled to one function (pure, the profile app's hot path).

``TraitSet.for_type`` builds a ``Step`` per trait an event type may change; ``trait_ops`` calls
them in the registry's order. A step gives the flat ops ``(field, code, value, keep, ...)`` of
one event, exactly as the general rule in ``streaming.traits.ops`` describes: a windowed trait
skips events older than its window and its ops carry ``keep``; a ``where`` must be true. What
depends on the event type and day alone (a windowed count's cell) is computed once and reused;
a trait reading ``metadata.<key>...`` names ``key`` as its guard, so an event without that key
is skipped before any call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from streaming.traits.measures import MEASURES

#: (event, resolved category, event day, today) -> the event's flat ops for one trait (empty: none).
Step = Callable[[Any, str, int, int], tuple[Any, ...] | list[Any]]
_NONE: tuple[Any, ...] = ()
_CACHE_LIMIT = 256  # cached op tuples per step (days, categories): bounded, cleared when full


class GuardedStep(NamedTuple):
    """A step, and the metadata key without which it gives nothing (None: no such key)."""

    guard: str | None
    step: Step


def guard_of(trait: Any) -> str | None:
    """The top metadata key a trait's values read (an event without it gives no value), or None."""
    path = trait.path
    if trait.measure is None and len(path) > 1 and path[0] == "metadata":
        return path[1]
    return None


def compile_step(compiled: Any, event_type: str, longest_window_days: int, type_only: Any) -> GuardedStep:
    """The step of ``compiled`` (a ``CompiledTrait``) for events of ``event_type``.

    ``type_only`` is the event reduced to its type, for traits whose values depend on nothing else.
    """
    trait = compiled.trait
    if (
        trait.kind == "count"
        and trait.keyed_by in (None, "event_type")
        and (trait.measure is None or MEASURES[trait.measure].by_type)
    ):
        pairs = tuple(compiled.values(type_only, ""))
        return GuardedStep(None, _by_day(compiled, pairs, longest_window_days))
    if (
        trait.kind == "count"
        and trait.keyed_by == "category"
        and not compiled.window_days
        and trait.measure is None
    ):
        return GuardedStep(None, _by_category(compiled))
    if trait.kind == "decayed" and trait.keyed_by == "category" and not compiled.window_days:
        return GuardedStep(None, _decayed_by_category(compiled))
    return GuardedStep(guard_of(trait), _general(compiled, longest_window_days))


def _by_day(compiled: Any, pairs: tuple[tuple[str, Any], ...], longest: int) -> Step:
    """A trait whose values depend on the event type alone (windowed: its cells on the day)."""
    window, predicate, code, name = compiled.window_days, compiled.predicate, compiled.code, compiled.name
    cache: dict[tuple[int, int], tuple[Any, ...]] = {}

    def step(event: Any, category: str, day: int, today: int) -> tuple[Any, ...]:
        if window and day <= today - window:
            return _NONE
        if predicate is not None and predicate(event, category) is not True:
            return _NONE
        found = cache.get((day, today))
        if found is None:
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            ops: list[Any] = []
            if window:
                keep, cell_day = today - longest + 1, day
            else:
                keep, cell_day = 0, None
            for key, value in pairs:
                ops += (name(cell_day, key), code, value, keep)
            found = cache[(day, today)] = tuple(ops)
        return found

    return step


def _by_category(compiled: Any) -> Step:
    """An unwindowed count keyed by the resolved category (``category_views``)."""
    predicate, code, values, name = compiled.predicate, compiled.code, compiled.values, compiled.name
    cache: dict[str, tuple[Any, ...]] = {}

    def step(event: Any, category: str, _day: int, _today: int) -> tuple[Any, ...]:
        if not category:
            return _NONE
        if predicate is not None and predicate(event, category) is not True:
            return _NONE
        found = cache.get(category)
        if found is None:
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            ops: list[Any] = []
            for key, value in values(event, category):
                ops += (name(None, key), code, value, 0)
            found = cache[category] = tuple(ops)
        return found

    return step


def _decayed_by_category(compiled: Any) -> Step:
    """An unwindowed decayed trait keyed by the resolved category (``interests``): the value
    ``value_maker`` gives, 2-log of the event time in half-lives, without its tuple of pairs."""
    predicate, code, name = compiled.predicate, compiled.code, compiled.name
    half_life = compiled.trait.half_life_ms

    def step(event: Any, category: str, _day: int, _today: int) -> tuple[Any, ...]:
        if not category:
            return _NONE
        if predicate is not None and predicate(event, category) is not True:
            return _NONE
        return (name(None, category), code, repr(event.timestamp_ms / half_life), 0)

    return step


def _general(compiled: Any, longest: int) -> Step:
    """Any trait: its window, its ``where``, then its values' cells."""
    window, predicate, code, values, name = (
        compiled.window_days,
        compiled.predicate,
        compiled.code,
        compiled.values,
        compiled.name,
    )
    if not window and not compiled.trait.keyed_by:
        field = name(None, "")

        def unkeyed(event: Any, category: str, _day: int, _today: int) -> tuple[Any, ...]:
            if predicate is not None and predicate(event, category) is not True:
                return _NONE
            found = values(event, category)
            if not found:
                return _NONE
            return (field, code, found[0][1], 0)

        return unkeyed

    def step(event: Any, category: str, day: int, today: int) -> list[Any] | tuple[Any, ...]:
        if window:
            if day <= today - window:
                return _NONE
            keep, cell_day = today - longest + 1, day
        else:
            keep, cell_day = 0, None
        if predicate is not None and predicate(event, category) is not True:
            return _NONE
        ops: list[Any] = []
        for key, value in values(event, category):
            ops += (name(cell_day, key), code, value, keep)
        return ops

    return step
