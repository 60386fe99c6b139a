"""What one event gives one trait: its (cell key, op value) pairs, compiled per trait (pure, hot path).

``value_maker(trait)`` returns a function of (event, resolved category) specialised for the
trait's kind, key and field, so the profile app does no per-event dispatch on them. An empty
result means the event contributes nothing (no category, a missing, ``null`` or non-numeric
field): see docs/traits.md, Kinds.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import msgspec

from streaming.traits.cells import MICROS
from streaming.traits.definition import TraitDefinition
from streaming.traits.measures import MEASURES
from streaming.traits.where import MISSING, Resolver, json_kind, resolver

Values = tuple[tuple[str, Any], ...]
ValueMaker = Callable[[Any, str], Values]
_ONE: Values = (("", 1),)
_encode = msgspec.json.Encoder().encode


def ordered(event: Any, value: Any) -> str:
    """A first/last cell value: event time and event_id, then the JSON value."""
    return f"{event.timestamp_ms}:{event.event_id}:{json_text(value)}"


def json_text(value: Any) -> str:
    """Compact JSON as ``json.dumps(separators=(",", ":"), ensure_ascii=False)`` writes it.

    Strings and objects of strings (the request context's geo, device, campaign) go through
    msgspec, which writes them byte for byte alike at a sixteenth of the cost; numbers keep
    ``json.dumps``, whose float format the stored cells already use.
    """
    kind = type(value)
    if kind is dict:
        for item in value.values():  # a loop, not all(...): this runs per context object
            if type(item) is not str:
                return _dumps(value)
    elif kind is not str:
        return _dumps(value)
    try:
        return _encode(value).decode()
    except (msgspec.EncodeError, UnicodeError):  # lone surrogates: json.dumps writes them
        return _dumps(value)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def value_maker(trait: TraitDefinition) -> ValueMaker:
    kind, keyed_by = trait.kind, trait.keyed_by
    if trait.measure:
        return _measured(trait)
    if kind == "count":
        if keyed_by == "event_type":
            return lambda event, _category: ((event.event_type, 1),)
        if keyed_by == "category":
            return lambda _event, category: ((category, 1),) if category else ()
        return lambda _event, _category: _ONE
    if kind == "decayed":
        half_life = trait.half_life_ms
        if keyed_by == "category":
            return lambda event, category: (
                ((category, repr(event.timestamp_ms / half_life)),) if category else ()
            )
        return lambda event, _category: (("", repr(event.timestamp_ms / half_life)),)
    read = resolver(trait.path)
    if keyed_by == "each":
        return _each(read)
    if kind in ("first", "last"):
        return _any_value(read)
    return _number(read, kind)


def _each(read: Resolver) -> ValueMaker:
    def make(event: Any, category: str) -> Values:
        value = read(event, category)
        if not isinstance(value, dict):
            return ()
        return tuple((k, ordered(event, v)) for k, v in sorted(value.items()) if v is not None)

    return make


def _any_value(read: Resolver) -> ValueMaker:
    def make(event: Any, category: str) -> Values:
        value = read(event, category)
        if value is MISSING or value is None:
            return ()
        return (("", ordered(event, value)),)

    return make


def _number(read: Resolver, kind: str) -> ValueMaker:
    def make(event: Any, category: str) -> Values:
        value = read(event, category)
        if value is MISSING or json_kind(value) != "number":
            return ()
        if kind == "sum":
            return (("", round(float(value) * MICROS)),)
        return (("", repr(float(value))),)

    return make


def _measured(trait: TraitDefinition) -> ValueMaker:
    """A built-in trait's integer measure (``streaming.traits.measures``), keyed as it declares."""
    measure = MEASURES[trait.measure].python  # type: ignore[index]
    keyed_by = trait.keyed_by
    if keyed_by is None:
        return lambda event, _category: () if (value := measure(event)) is None else (("", value),)
    if keyed_by == "product_id":

        def by_product(event: Any, _category: str) -> Values:
            product = event.metadata.get("product_id")
            value = measure(event) if product else None
            return () if value is None else ((product, value),)

        return by_product
    raise ValueError(f"a measured trait keyed by {keyed_by!r} is not supported")
