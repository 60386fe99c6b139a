"""The trait registry: the built-in traits plus the user's, compiled for the hot path (pure).

``TraitSet`` is what every engine takes: the stream turns an event into cell ops with it
(``streaming.traits.ops``), the document builder reads the profile's trait fields from cells
with it, and the DuckDB recompute generates its SQL from it (``streaming.traits.sql``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streaming.traits.cells import cell_field, grouped_cells, read_value
from streaming.traits.definition import TraitDefinition, TraitRead, builtin_reads, builtin_traits
from streaming.traits.values import ValueMaker, value_maker
from streaming.traits.where import Predicate, compile_where, python_predicate


class CompiledTrait:
    """A trait with its ``where`` and its values compiled to Python, and its cell names remembered."""

    __slots__ = ("trait", "predicate", "values", "code", "window_days", "names")

    def __init__(self, trait: TraitDefinition) -> None:
        self.trait = trait
        self.predicate: Predicate | None = (
            python_predicate(compile_where(trait.where)) if trait.where else None
        )
        self.values: ValueMaker = value_maker(trait)
        self.code = trait.code
        self.window_days = trait.window_days or 0
        #: cell day -> key -> cell name (the same few names recur on every event)
        self.names: dict[int | None, dict[str, str]] = {}

    def name(self, day: int | None, key: str) -> str:
        by_day = self.names.get(day)
        if by_day is None:
            if len(self.names) > 64:  # days pass: forget the old ones
                self.names.clear()
            by_day = self.names[day] = {}
        found = by_day.get(key)
        if found is None:
            if len(by_day) > 10_000:
                by_day.clear()
            found = by_day[key] = cell_field(self.trait, day, key)
        return found


class TraitSet:
    """Built-in and user-declared (``computed``) traits; immutable, swapped whole on reload."""

    def __init__(
        self, computed: tuple[TraitDefinition, ...] = (), *, interest_half_life_days: float = 7.0
    ) -> None:
        self.builtin = builtin_traits(interest_half_life_days)
        self.computed = computed
        self.interest_half_life_days = interest_half_life_days
        self._reads = builtin_reads(self.builtin)
        self._computed_reads = tuple(TraitRead(trait.name, trait) for trait in computed)
        self._compiled = tuple(CompiledTrait(trait) for trait in (*self.builtin, *computed))
        self._by_type: dict[str, tuple[CompiledTrait, ...]] = {}
        #: Set once when an app registers the set (streaming/traits/registration.py); 0 = unregistered.
        self.generation = 0
        #: The longest window of any trait (cells older than it are dropped).
        self.longest_window_days = max((t.window_days or 0 for t in self.all), default=0)

    @property
    def all(self) -> tuple[TraitDefinition, ...]:
        return (*self.builtin, *self.computed)

    def for_type(self, event_type: str) -> tuple[CompiledTrait, ...]:
        """The traits an event of this type may change (cached per type)."""
        found = self._by_type.get(event_type)
        if found is None:
            found = tuple(c for c in self._compiled if c.trait.on is None or event_type in c.trait.on)
            if len(self._by_type) < 1024:  # custom types are open-ended: bound the cache
                self._by_type[event_type] = found
        return found

    def profile_fields(self, fields: Mapping[str, str], now_ms: int) -> dict[str, Any]:
        """The profile's trait fields: traits, interests, counts_7d, counts_30d and computed."""
        groups = grouped_cells(fields)
        document = {
            read.profile_field: read_value(read, groups.get(read.trait.storage_id, ()), now_ms)
            for read in self._reads
        }
        computed = {}
        for read in self._computed_reads:
            value = read_value(read, groups.get(read.trait.storage_id, ()), now_ms)
            if value is not None:
                computed[read.profile_field] = value
        document["computed"] = computed
        return document

    def __len__(self) -> int:
        return len(self.computed)


#: The built-in traits alone, with the default interest half-life.
BUILTIN_TRAITS = TraitSet()
