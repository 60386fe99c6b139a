"""Load and validate a traits file (YAML): all of it or nothing, with every problem listed.

```yaml
traits:
  shoe_views_30d: {kind: count, on: [page_view], where: 'event.metadata.category == "shoes"', window: 30d}
  lifetime_spend: {kind: sum, on: [purchase], field: metadata.price}
```
See docs/traits.md for each key and each kind's semantics.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from core.yaml12 import load_yaml
from quality.event_contract import CUSTOM_EVENT_TYPE_PATTERN, STANDARD_EVENT_TYPES
from streaming.traits.definition import KINDS, NAME_PATTERN, NUMERIC_KINDS, VALUE_KINDS, TraitDefinition
from streaming.traits.registry import TraitSet
from streaming.traits.where import WhereError, check_path, compile_where

_TRAIT_KEYS = {"kind", "on", "where", "field", "window", "half_life", "description"}
_DAYS = re.compile(r"^(\d+(?:\.\d+)?)d$")
_EVENT_TYPE = re.compile(CUSTOM_EVENT_TYPE_PATTERN)
MAX_WINDOW_DAYS = 3650


class TraitFileError(ValueError):
    """The traits file is invalid; ``problems`` lists every problem found."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems))


def load_traits(path: str | Path, interest_half_life_days: float = 7.0) -> TraitSet:
    """Read and validate a traits file; raises TraitFileError listing every problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise TraitFileError(str(path), [f"cannot read: {exc.strerror or exc}"]) from exc
    return parse_traits(text, str(path), interest_half_life_days)


def parse_traits(text: str, source: str = "<traits>", interest_half_life_days: float = 7.0) -> TraitSet:
    try:
        document = load_yaml(text)
    except yaml.YAMLError as exc:
        raise TraitFileError(source, [f"not valid YAML: {exc}"]) from exc
    if document is None:
        document = {}
    if not isinstance(document, dict) or set(document) - {"traits"}:
        raise TraitFileError(source, ["the file must be a mapping with one key, `traits`"])
    declared = document.get("traits") or {}
    if not isinstance(declared, dict):
        raise TraitFileError(source, ["`traits` must map trait names to definitions"])
    problems: list[str] = []
    traits = []
    for name, spec in declared.items():
        trait = _trait(name, spec, problems)
        if trait is not None:
            traits.append(trait)
    if problems:
        raise TraitFileError(source, problems)
    return TraitSet(tuple(traits), interest_half_life_days=interest_half_life_days)


def _trait(name: Any, spec: Any, problems: list[str]) -> TraitDefinition | None:
    where = f"trait {name!r}"
    start = len(problems)
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        problems.append(f"{where}: the name must match {NAME_PATTERN.pattern}")
    if not isinstance(spec, dict):
        problems.append(f"{where}: the definition must be a mapping (kind, on, ...)")
        return None
    unknown = set(spec) - _TRAIT_KEYS
    if unknown:
        problems.append(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    kind = spec.get("kind")
    if kind not in KINDS:
        problems.append(f"{where}: `kind` must be one of {', '.join(KINDS)}, got {kind!r}")
    on = _event_types(spec.get("on"), where, problems)
    condition = spec.get("where")
    if condition is not None:
        if not isinstance(condition, str):
            problems.append(f"{where}: `where` must be a CEL string")
        else:
            try:
                compile_where(condition)
            except WhereError as exc:
                problems.append(f"{where}: `where` {condition!r}: {exc}")
    field = spec.get("field")
    if kind in NUMERIC_KINDS or kind in VALUE_KINDS:
        if not isinstance(field, str) or not field:
            problems.append(f"{where}: kind {kind} needs `field` (e.g. metadata.price)")
        else:
            try:
                check_path(tuple(field.split(".")))
            except WhereError as exc:
                problems.append(f"{where}: `field` {field!r}: {exc}")
    elif field is not None:
        problems.append(f"{where}: kind {kind} takes no `field`")
    window = _days(spec.get("window"), f"{where}: `window`", problems, whole=True)
    half_life = _days(spec.get("half_life"), f"{where}: `half_life`", problems, whole=False)
    if kind == "decayed" and half_life is None and "half_life" not in spec:
        problems.append(f"{where}: kind decayed needs `half_life` (e.g. 7d)")
    if kind != "decayed" and "half_life" in spec:
        problems.append(f"{where}: only kind decayed takes `half_life`")
    if len(problems) > start:
        return None
    return TraitDefinition(
        name,
        kind,
        on,
        where=condition,
        field=field,
        window_days=int(window) if window is not None else None,
        half_life_days=half_life,
    )


def _event_types(value: Any, where: str, problems: list[str]) -> frozenset[str] | None:
    if value is None:
        problems.append(f"{where}: `on` must list the event types it reads (e.g. [page_view])")
        return None
    types = [value] if isinstance(value, str) else value
    if not isinstance(types, list) or not types:
        problems.append(f"{where}: `on` must be a non-empty list of event types")
        return None
    bad = [
        t for t in types if not isinstance(t, str) or not (t in STANDARD_EVENT_TYPES or _EVENT_TYPE.match(t))
    ]
    if bad:
        problems.append(f"{where}: `on` has invalid event type(s) {bad}")
    return frozenset(t for t in types if isinstance(t, str))


def _days(value: Any, where: str, problems: list[str], *, whole: bool) -> float | None:
    """'30d' or a number of days; windows are whole days (1 to MAX_WINDOW_DAYS)."""
    if value is None:
        return None
    days: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        days = float(value)
    elif isinstance(value, str) and (match := _DAYS.match(value.strip())):
        days = float(match.group(1))
    if days is None or days <= 0 or (whole and (days != int(days) or days > MAX_WINDOW_DAYS)):
        what = f"a whole number of days from 1 to {MAX_WINDOW_DAYS}" if whole else "a positive number of days"
        problems.append(f"{where} must be {what}, like 30d; got {value!r}")
        return None
    return days
