"""Trait cells recomputed in DuckDB SQL from the same definitions the stream uses (pure).

``trait_cells_sql`` reads the ``profile_events`` table of ``assets/batch_sql.py`` (one row per
distinct event of a profile, with ``event_category`` and the JSON columns ``SqlPaths`` asked
for) and yields one row per cell: ``profile_id``, ``field`` (the cell's name) and its value in
``n`` (BIGINT), ``x`` (DOUBLE) or ``s`` (VARCHAR), formatted by ``cell_text``. Each cell is the
set-based form of ``streaming.traits.cells.combine`` over the cell's events. The built-in
traits' measures (``streaming.traits.measures``) are extractions too: ``measure_<name>``,
computed where ``profile_events`` is built (they read its metadata struct ``m``).
"""

from __future__ import annotations

from typing import NamedTuple

from streaming.traits.cells import MICROS
from streaming.traits.definition import DAY_MS, TraitDefinition
from streaming.traits.measures import MEASURES
from streaming.traits.registry import TraitSet
from streaming.traits.where import SqlPaths, compile_where, numeric_sql, sql_string, where_sql

CELL_COLUMNS = ("profile_id", "field", "n", "x", "s")


class TraitSql(NamedTuple):
    """``extractions``: select expressions over the event JSON ``j``; ``cells``: the cells query."""

    extractions: list[str]
    cells: str


def trait_cells_sql(traits: TraitSet) -> TraitSql:
    paths = SqlPaths()
    parts = [_trait_sql(trait, paths) for trait in traits.all]
    measures = sorted({trait.measure for trait in traits.all if trait.measure})
    extractions = [f"{MEASURES[name].sql} AS measure_{name}" for name in measures]
    return TraitSql([*paths.extractions(), *extractions], "\nUNION ALL\n".join(parts))


def cell_text(n: int | None, x: float | None, s: str | None) -> str:
    """A cells-query row's value as the stream stores it."""
    if n is not None:
        return str(n)
    if x is not None:
        return repr(float(x))
    return s or ""


def _trait_sql(trait: TraitDefinition, paths: SqlPaths) -> str:
    filters = []
    if trait.on is not None:
        filters.append(f"event_type IN ({', '.join(sql_string(t) for t in sorted(trait.on))})")
    if trait.where:
        filters.append(f"({where_sql(compile_where(trait.where), paths)}) IS TRUE")
    day = f"floor(ts / {DAY_MS})::BIGINT" if trait.window_days else "NULL"
    key = "''"
    if trait.keyed_by == "event_type":
        key = "event_type"
    elif trait.keyed_by == "category":
        key = "category"
        filters.append("category <> ''")
    elif trait.keyed_by == "product_id":
        key = "product_id"
        filters.append("product_id <> ''")
    value = "NULL::JSON"
    if trait.measure:
        value = f"measure_{trait.measure}"
        filters.append(f"{value} IS NOT NULL")
    elif trait.field:
        value = paths.json(trait.path)
        filters.append(f"{value} IS NOT NULL AND json_type({value}) <> 'NULL'")
    where = " AND ".join(filters) or "true"
    rows = (
        f"SELECT profile_id, event_id, ts, {day} AS day, {key} AS key, {value} AS v "
        f"FROM profile_events WHERE {where}"
    )
    if trait.keyed_by == "each":
        rows = (
            "SELECT profile_id, event_id, ts, day, e.key AS key, e.value AS v FROM ("
            "SELECT *, unnest(map_entries(json_transform(v, '\"MAP(VARCHAR, JSON)\"'))) AS e "
            f"FROM ({rows}) WHERE json_type(v) = 'OBJECT') WHERE json_type(e.value) <> 'NULL'"
        )
    field = f"'x{trait.code}:{trait.storage_id}:' || coalesce(day::VARCHAR, '') || ':' || key"
    if trait.stored_as is not None:
        field = f"{sql_string(trait.stored_as)} || key"
    n, x, s = "NULL::BIGINT", "NULL::DOUBLE", "NULL::VARCHAR"
    kind = trait.kind
    if trait.measure:  # an integer per event: its sum (count, sum), least or greatest
        n = {"count": "sum", "sum": "sum", "min": "min", "max": "max"}[kind] + "(v)::BIGINT"
    elif kind == "count":
        n = "count(*)"
    elif kind == "sum":
        rows = f"SELECT * REPLACE ({numeric_sql('v')} AS v) FROM ({rows})"
        n, rows = (
            f"sum(round_even(v::DOUBLE * {MICROS}, 0)::BIGINT)::BIGINT",
            f"SELECT * FROM ({rows}) WHERE v IS NOT NULL",
        )
    elif kind in ("min", "max"):
        rows = f"SELECT * REPLACE ({numeric_sql('v')} AS v) FROM ({rows})"
        x, rows = f"{kind}(v::DOUBLE)", f"SELECT * FROM ({rows}) WHERE v IS NOT NULL"
    elif kind in ("first", "last"):
        pick = "min_by" if kind == "first" else "max_by"
        s = f"{pick}(ts::VARCHAR || ':' || event_id || ':' || v::VARCHAR, (ts, event_id))"
    else:  # decayed: log2 of the sum of 2^(ts / half-life), shifted by the group's max
        h = repr(trait.half_life_ms)
        rows = (
            f"SELECT *, ts / {h}::DOUBLE AS e, "
            f"max(ts / {h}::DOUBLE) OVER (PARTITION BY profile_id, day, key) AS m FROM ({rows})"
        )
        x = "any_value(m) + log2(sum(pow(2.0, e - m)))"
    return (
        f"SELECT profile_id, {field} AS field, {n} AS n, {x} AS x, {s} AS s "
        f"FROM ({rows}) GROUP BY profile_id, day, key"
    )
