"""Trait cells: how a trait is stored, merged and read (pure; ``update.lua`` mirrors ``combine``).

A cell is one field of a profile's fields hash, named ``x<code>:<storage id>:<day>:<key>``
(``day``: the UTC day number when the trait has a window, else empty; ``key``: the map key of
a keyed trait, else empty). Its code says how two values merge, so merging the parts of a
person (identity stitching) needs no registry. The built-in profile's traits keep their
historical names instead (``stored_as``: ``event_count``, ``t:<type>``, ...); the registry
knows their codes (``TraitSet.code_of``). The codes:

- ``n``: integer addition (counts; sums in millionths);
- ``lo``/``hi``: the least/greatest number (stored as Python's ``repr`` of the float);
- ``f``/``l``: ``"<event ms>:<event_id>:<JSON value>"`` of the earliest/latest event, by event
  time, ties by event_id compared byte by byte;
- ``d``: log2 of the sum of 2^(event ms / half-life ms) over the events: adding one is a
  log-add, so nothing overflows over years; the value read at ``now`` is 2^(L - now / half-life),
  the sum over events of 0.5^(age / half-life).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, MutableMapping
from typing import Any

from core.time_format import iso_from_ms
from streaming.traits.definition import DAY_MS, TraitDefinition, TraitRead

MICROS = 1_000_000
CELL_PREFIX = "x"
LN2 = math.log(2)


def cell_field(trait: TraitDefinition, day: int | None, key: str) -> str:
    if trait.stored_as is not None:
        return trait.stored_as + key
    return f"x{trait.code}:{trait.storage_id}:{'' if day is None else day}:{key}"


def is_cell(name: str) -> bool:
    return name[:1] == CELL_PREFIX and ":" in name


def parse_cell(name: str) -> tuple[str, str, int | None, str]:
    """(code, storage id, day or None, key) of a cell field name."""
    code, storage_id, day, key = name[1:].split(":", 3)
    return code, storage_id, int(day) if day else None, key


def order_key(value: str) -> tuple[int, bytes]:
    """The (event ms, event_id bytes) a first/last cell value is ordered by."""
    ts, event_id, _ = value.split(":", 2)
    return int(ts), event_id.encode()


def log_add(a: float, b: float) -> float:
    """log2(2^a + 2^b), in the exact arithmetic ``update.lua`` uses."""
    hi, lo = (a, b) if a >= b else (b, a)
    return hi + math.log(1 + 2.0 ** (lo - hi)) / LN2


def combine(code: str, current: str | None, value: str) -> str:
    """The cell after merging ``value`` into ``current`` (commutative and associative)."""
    if current is None:
        return value
    if code == "n":
        return str(int(current) + int(value))
    if code == "lo":
        return value if float(value) < float(current) else current
    if code == "hi":
        return value if float(value) > float(current) else current
    if code == "f":
        return value if order_key(value) < order_key(current) else current
    if code == "l":
        return value if order_key(value) > order_key(current) else current
    if code == "d":
        return repr(log_add(float(current), float(value)))
    raise ValueError(f"unknown cell code {code!r}")


def apply_ops(fields: MutableMapping[str, Any], ops: tuple[Any, ...]) -> None:
    """Apply an event's flat ops (field, code, value, keep, ...) as ``update.lua`` does.

    ``w`` is the profile's oldest windowed day; once it is before an op's ``keep``, every
    windowed cell of a day before ``keep`` is dropped and ``w`` becomes the oldest day left.
    """
    keep = 0
    for i in range(0, len(ops), 4):
        name, code, value, op_keep = ops[i : i + 4]
        current = fields.get(name)
        fields[name] = combine(code, current, str(value))
        if op_keep:
            keep = op_keep
            day = parse_cell(name)[2]
            if current is None and ("w" not in fields or day < int(fields["w"])):
                fields["w"] = str(day)
    if keep and int(fields.get("w", keep)) < keep:
        days = []
        for name in [n for n in fields if is_cell(n)]:
            day = parse_cell(name)[2]
            if day is not None and day < keep:
                del fields[name]
            elif day is not None:
                days.append(day)
        fields["w"] = str(min(days))


def read_value(read: TraitRead, cells: Iterable[tuple[int | None, str, str]], now_ms: int) -> Any:
    """A trait read at ``now_ms``: {key: value} for keyed traits, else a value or None (absent)."""
    trait = read.trait
    window = read.window_days or trait.window_days
    today = now_ms // DAY_MS
    merged: dict[str, str] = {}
    for day, key, value in cells:
        if window is not None and (day is None or not today - window < day <= today):
            continue
        merged[key] = combine(trait.code, merged.get(key), value)
    values = {key: present(trait, value, now_ms) for key, value in merged.items()}
    values = {key: value for key, value in values.items() if value is not None}
    if trait.keyed_by is not None:
        if read.positive_only:
            values = {key: value for key, value in values.items() if value > 0}
        return dict(sorted(values.items()))
    value = values.get("")
    if value is None:
        return read.default
    return iso_from_ms(value) if read.as_time else value


def present(trait: TraitDefinition, value: str, now_ms: int) -> Any:
    """A merged cell as the profile shows it (None: omit)."""
    if trait.kind == "count":
        return int(value) or None
    if trait.kind == "sum":
        return round(int(value) / MICROS, 6)
    if trait.kind in ("min", "max"):
        return int(value) if trait.measure else float(value)
    if trait.kind in ("first", "last"):
        return json.loads(value.split(":", 2)[2])
    score = round(2.0 ** (float(value) - now_ms / trait.half_life_ms), 3)
    return score or None
