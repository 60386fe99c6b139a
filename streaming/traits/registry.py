"""The trait registry: the built-in traits plus the user's, compiled for the hot path (pure).

``TraitSet`` is what every engine takes: the stream turns an event into cell ops with it
(``streaming.traits.ops``), the document builder reads the profile's trait fields from cells
with it, and the DuckDB recompute generates its SQL from it (``streaming.traits.sql``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, NamedTuple

from streaming.traits.cells import cell_field, is_cell, parse_cell, read_value
from streaming.traits.definition import TraitDefinition, TraitRead, builtin_reads, builtin_traits
from streaming.traits.measures import MEASURES
from streaming.traits.steps import GuardedStep, compile_step
from streaming.traits.values import ValueMaker, value_maker
from streaming.traits.where import Predicate, compile_where, python_predicate

Cells = list[tuple[int | None, str, str]]  # (day, key, value) of one trait


class CompiledTrait:
    """A trait with its ``where`` and its values compiled to Python, and its cell names remembered."""

    __slots__ = ("trait", "predicate", "values", "code", "window_days", "names", "by_type")

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
        #: Its ops depend on the event type alone: computed once per type (``TraitSet.for_type``).
        self.by_type = (
            trait.kind == "count"
            and not self.window_days
            and self.predicate is None
            and trait.keyed_by in (None, "event_type")
            and (trait.measure is None or MEASURES[trait.measure].by_type)
        )

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


class _TypeOnly(NamedTuple):
    """An event reduced to its type: what a ``by_type`` trait's values read."""

    event_type: str
    metadata: Mapping[str, Any] = {}
    timestamp_ms: int = 0
    event_id: str = ""


class TypePlan(NamedTuple):
    """What an event of one type updates: ops fixed by the type, one-cell measures, the other traits."""

    fixed_ops: tuple[Any, ...]
    #: (cell name, code, measure) of unkeyed, unwindowed traits without ``where`` (first_seen, ...)
    measured: tuple[tuple[str, str, Any], ...]
    #: The other traits' steps, in the registry's order (``streaming.traits.steps``).
    computed: tuple[GuardedStep, ...]


class TraitSet:
    """Built-in and user-declared (``computed``) traits; immutable, swapped whole on reload."""

    def __init__(
        self, computed: tuple[TraitDefinition, ...] = (), *, interest_half_life_days: float = 7.0
    ) -> None:
        self.builtin = builtin_traits(interest_half_life_days)
        self.computed = computed
        self.interest_half_life_days = interest_half_life_days
        #: The profile fields of the built-in traits, in document order.
        self.reads = builtin_reads(self.builtin)
        self._computed_reads = tuple(TraitRead(trait.name, trait) for trait in computed)
        #: Every profile field the registry makes (``computed`` holds the user's traits).
        self.field_names = frozenset(read.profile_field for read in self.reads) | {"computed"}
        self._compiled = tuple(CompiledTrait(trait) for trait in (*self.builtin, *computed))
        self._by_type: dict[str, TypePlan] = {}
        stored = [trait for trait in self.builtin if trait.stored_as is not None]
        self._stored_fields = {t.stored_as: t for t in stored if t.keyed_by is None}
        self._stored_prefixes = {t.stored_as: t for t in stored if t.keyed_by is not None}
        #: Set once when an app registers the set (streaming/traits/registration.py); 0 = unregistered.
        self.generation = 0
        #: The longest window of any trait (cells older than it are dropped).
        self.longest_window_days = max((t.window_days or 0 for t in self.all), default=0)

    @property
    def all(self) -> tuple[TraitDefinition, ...]:
        return (*self.builtin, *self.computed)

    @property
    def cell_traits(self) -> tuple[TraitDefinition, ...]:
        """The traits stored as ``x...`` cells: those registered with a generation and backfilled."""
        return tuple(trait for trait in self.all if trait.stored_as is None)

    def for_type(self, event_type: str) -> TypePlan:
        """What an event of this type may change (cached per type)."""
        found = self._by_type.get(event_type)
        if found is None:
            fixed: list[Any] = []
            measured = []
            computed = []
            for c in self._compiled:
                trait = c.trait
                if trait.on is not None and event_type not in trait.on:
                    continue
                if c.by_type:
                    for key, value in c.values(_TypeOnly(event_type), ""):
                        fixed += (c.name(None, key), c.code, value, 0)
                elif trait.measure and not trait.keyed_by and not c.window_days and c.predicate is None:
                    measured.append((c.name(None, ""), c.code, MEASURES[trait.measure].python))
                else:
                    computed.append(
                        compile_step(c, event_type, self.longest_window_days, _TypeOnly(event_type))
                    )
            found = TypePlan(tuple(fixed), tuple(measured), tuple(computed))
            if len(self._by_type) < 1024:  # custom types are open-ended: bound the cache
                self._by_type[event_type] = found
        return found

    def stored_trait(self, name: str) -> TraitDefinition | None:
        """The built-in trait a historically named field (``event_count``, ``t:click``) belongs to."""
        found = self._stored_fields.get(name)
        if found is None:
            colon = name.find(":")
            if colon > 0:
                found = self._stored_prefixes.get(name[: colon + 1])
        return found

    def code_of(self, name: str) -> str | None:
        """How a profile field merges with another part's (identity stitching): its cell code, or None."""
        if is_cell(name):
            return name[1 : name.index(":")]
        trait = self.stored_trait(name)
        return trait.code if trait is not None else None

    def grouped(self, fields: Mapping[str, str]) -> dict[str, Cells]:
        """The trait values of a profile's fields, by storage id: [(day, key, value)]."""
        groups: dict[str, Cells] = {}
        for name, value in fields.items():
            if is_cell(name):
                _, storage_id, day, key = parse_cell(name)
                groups.setdefault(storage_id, []).append((day, key, value))
                continue
            trait = self.stored_trait(name)
            if trait is not None:
                key = name[len(trait.stored_as) :] if trait.keyed_by else ""  # type: ignore[arg-type]
                groups.setdefault(trait.storage_id, []).append((None, key, value))
        return groups

    def profile_fields(
        self, fields: Mapping[str, str], now_ms: int, names: Collection[str] | None = None
    ) -> dict[str, Any]:
        """The profile fields the registry makes (``names`` of them, default all), read at ``now_ms``."""
        groups = self.grouped(fields)
        document = {}
        for read in self.reads:
            if names is None or read.profile_field in names:
                value = read_value(read, groups.get(read.trait.storage_id, ()), now_ms)
                if value is not None or not read.omit_absent:
                    document[read.profile_field] = value
        if names is None or "computed" in names:
            computed = {}
            for read in self._computed_reads:
                value = read_value(read, groups.get(read.trait.storage_id, ()), now_ms)
                if value is not None:
                    computed[read.profile_field] = value
            document["computed"] = computed
        return document

    def __len__(self) -> int:
        return len(self.computed)


_SAMPLE_KEYS = {"event_type": "page_view", "category": "shoes", "product_id": "p1", "each": "plan"}
_SAMPLE_VALUES = {"count": 1, "sum": 0.0, "min": 1.0, "max": 1.0, "first": "x", "last": "pro", "decayed": 1.0}


def sample_fields(traits: TraitSet) -> dict[str, Any]:
    """A value of the right shape for every profile field of the registry (the rules' dry run)."""
    sample: dict[str, Any] = {}
    for read in traits.reads:
        trait = read.trait
        value: Any = _SAMPLE_VALUES[trait.kind]
        if read.sample is not None:
            value = read.sample
        elif read.as_time:
            value = "2024-01-01T00:00:00.000Z"
        elif trait.measure and trait.kind != "sum":  # integers (a sum shows as a decimal)
            value = 1
        sample[read.profile_field] = {_SAMPLE_KEYS[trait.keyed_by]: value} if trait.keyed_by else value
    sample["computed"] = {}  # the user's traits; absent values are omitted
    return sample


#: The built-in traits alone, with the default interest half-life.
BUILTIN_TRAITS = TraitSet()
