"""Profile recompute as DuckDB SQL over the archive's Parquet, with the stream's semantics.

What the test oracle ``tests.reference_recompute`` computes event by event, set-based: each archived
record becomes its ``profile_delta`` columns (category from metadata, else the catalog; the
built-in measures, amounts in integer micros rounded half to even like Python's ``round``),
each (profile, event_id) then counts once, the first in Kafka order as the stream applies it.
The trait registry's fields (every counter, time and total) are its generated SQL
(``streaming.traits.sql``); what sits beside the registry follows ``update.lua`` here: top
products by latest event time, sessions split by gaps over the session gap, linked anonymous
ids. ``documents`` assembles the rows with the stream's own ``build_profile``.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import duckdb
import pyarrow as pa

from core.archive_layout import archive_glob, before_cut_sql, has_archive
from core.forgetting import SUPPRESSIONS_TABLE, Suppressions, forgotten_sql, suppressions_table
from streaming.profiles.admission import Admission
from streaming.profiles.document import LAST_PRODUCTS_LIMIT, build_profile, now
from streaming.profiles.identity_graph import DEFAULT_MAX_IDS, IdNode, Resolution, resolve
from streaming.traits.registry import BUILTIN_TRAITS, TraitSet
from streaming.traits.sql import CELL_COLUMNS, cell_text, trait_cells_sql

logger = logging.getLogger(__name__)

_METADATA = (
    '{"metadata": {"product_id": "VARCHAR", "category": "VARCHAR", "quantity": "BIGINT", "price": "DOUBLE"}}'
)

PROFILE_EVENTS_SQL = """
CREATE OR REPLACE TEMP TABLE profile_events AS
WITH records AS NOT MATERIALIZED (
    -- Kafka order as one number: partition, then offset, then the file, which tells apart the
    -- copies of a record archived twice. The archive holds the one events topic.
    SELECT coalesce(user_id, anonymous_id) AS profile_id, event_id, event_type, epoch_ms(event_time) AS ts,
           user_id, anonymous_id, raw,
           (kafka_partition::UHUGEINT << 96) | (kafka_offset::UHUGEINT << 32) | file_index AS position
    FROM read_parquet($glob, hive_partitioning = true, union_by_name = true)
    WHERE valid AND NOT {forgotten} AND {cut}{admitted}
), firsts AS (
    -- Each (profile, event_id) applies once, the first in Kafka order. Not materializing
    -- `records` keeps the raw bytes out of this aggregate; only the survivors are parsed.
    SELECT profile_id, event_id, min(position) AS position FROM records GROUP BY ALL
), once AS (
    SELECT * EXCLUDE (raw, position), json_transform(decode(raw), '{metadata}').metadata AS m,
           decode(raw)::JSON AS j
    FROM records SEMI JOIN firsts USING (profile_id, event_id, position)
)
-- profile_delta, per event
SELECT profile_id, event_id, event_type, ts, user_id, anonymous_id,
       coalesce(m.product_id, '') AS product_id,
       CASE WHEN event_type = 'page_view' THEN coalesce(nullif(m.category, ''), catalog.category, '')
            ELSE '' END AS category,
       coalesce(nullif(m.category, ''), catalog.category, '') AS event_category{extractions}
FROM once LEFT JOIN catalog ON catalog.product_id = m.product_id
"""

PROFILES_SQL = """
SELECT profile_id, max(user_id) AS user_id, max(ts) AS last_seen,
       count(*) FILTER (starts_session)::BIGINT AS session_count,
       max(ts) FILTER (starts_session) AS last_session_start
FROM (
    -- A gap over the session gap in event time starts a session: the stream's interval merging.
    SELECT *, coalesce(ts - lag(ts) OVER (PARTITION BY profile_id ORDER BY ts) > $gap, true) AS starts_session
    FROM profile_events
)
GROUP BY profile_id
"""

ENTRIES_SQL = f"""
SELECT DISTINCT profile_id, 'a' AS kind, anonymous_id AS key, 0 AS value FROM profile_events
WHERE user_id IS NOT NULL AND anonymous_id IS NOT NULL
UNION ALL
SELECT profile_id, 'p', p.product_id, p.ts FROM (
    -- the newest products, ties by product id descending (update.lua's ZREVRANGE)
    SELECT profile_id,
           unnest(max_by({{'product_id': product_id, 'ts': ts}}, (ts, product_id), {LAST_PRODUCTS_LIMIT}))
               AS p
    FROM (
        SELECT profile_id, product_id, max(ts) AS ts FROM profile_events WHERE product_id <> '' GROUP BY ALL
    )
    GROUP BY profile_id
)
"""

PROFILE_COLUMNS = ("profile_id", "user_id", "last_seen", "session_count", "last_session_start")
ENTRY_COLUMNS = ("profile_id", "kind", "key", "value")


def profile_events_sql(
    extractions: list[str], cut: Mapping[int, int] | None = None, admitted: str = ""
) -> str:
    """PROFILE_EVENTS_SQL with the event-JSON columns the traits read, over the records before ``cut``;
    ``admitted`` (``Admission.sql``) leaves out the records the stream keeps out of profiles, before
    deduplication as the stream does."""
    return PROFILE_EVENTS_SQL.format(
        forgotten=forgotten_sql("coalesce(user_id, anonymous_id)", "epoch_ms(event_time)"),
        cut=before_cut_sql(cut),
        admitted=admitted,
        metadata=_METADATA,
        extractions="".join(f",\n       {e}" for e in extractions),
    )


class ProfileTables(NamedTuple):
    """``profiles``: PROFILE_COLUMNS, times in epoch ms (the last session ends at last_seen).

    ``entries``: ENTRY_COLUMNS; kind "a" linked anonymous ids (value 0), "p" last products
    (value = its latest event ms). ``cells``: the trait registry's fields, CELL_COLUMNS
    (streaming/traits/sql.py).
    """

    profiles: pa.Table
    entries: pa.Table
    cells: pa.Table


def recompute_tables(
    con: duckdb.DuckDBPyConnection,
    archive_root: Path,
    categories: Mapping[str, str],
    session_gap_ms: int,
    forgotten: Suppressions | None = None,
    traits: TraitSet = BUILTIN_TRAITS,
    cut: Mapping[int, int] | None = None,
    admission: Admission = Admission(),
) -> ProfileTables:
    """Read the archive under ``archive_root`` and aggregate every profile, without the events
    ``forgotten`` by the forget rule (core/forgetting.py).

    Events that ``admission`` refuses (bots, no consent to personalization) do not count, as in
    the stream. Uses a temp table and two registered views on ``con``, dropped before returning.
    """
    con.register("catalog", pa.table({"product_id": list(categories), "category": list(categories.values())}))
    con.register(SUPPRESSIONS_TABLE, suppressions_table(forgotten or {}))
    try:
        trait_sql = trait_cells_sql(traits)
        glob = archive_glob(archive_root)
        admitted = admission.sql(_archive_columns(con, glob))
        con.execute(profile_events_sql(trait_sql.extractions, cut, admitted), {"glob": glob})
        profiles = con.sql(PROFILES_SQL, params={"gap": session_gap_ms}).to_arrow_table()
        entries = con.sql(ENTRIES_SQL).to_arrow_table()
        cells = con.sql(trait_sql.cells).to_arrow_table()
    finally:
        con.execute("DROP TABLE IF EXISTS profile_events")
        con.unregister("catalog")
        con.unregister(SUPPRESSIONS_TABLE)
    return ProfileTables(profiles, entries, cells)


def _archive_columns(con: duckdb.DuckDBPyConnection, glob: str) -> set[str]:
    """The columns of any archive file (archives of older releases lack the newer ones)."""
    described = con.execute(
        "DESCRIBE SELECT * FROM read_parquet($glob, hive_partitioning = true, union_by_name = true)",
        {"glob": glob},
    ).fetchall()
    return {row[0] for row in described}


def documents(
    tables: ProfileTables, traits: TraitSet = BUILTIN_TRAITS, now_ms: int | None = None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(profile_id, document without ``updated_at``) per profile, as ``recompute_profiles`` has them.

    Trait fields are read at ``now_ms`` (default: now).
    """
    now_ms = now() if now_ms is None else now_ms
    cells: dict[str, dict[str, str]] = {}
    columns = [tables.cells.column(n).to_pylist() for n in CELL_COLUMNS]
    for pid, name, n, x, s in zip(*columns, strict=True):
        cells.setdefault(pid, {})[name] = cell_text(n, x, s)
    keyed: dict[str, list[tuple[str, str, int]]] = {}
    entries = tables.entries
    for pid, kind, key, value in zip(*(entries.column(n).to_pylist() for n in ENTRY_COLUMNS), strict=True):
        keyed.setdefault(pid, []).append((kind, key, value))
    columns = [tables.profiles.column(n).to_pylist() for n in PROFILE_COLUMNS]
    for pid, user_id, last_seen, sessions, session_start in zip(*columns, strict=True):
        fields = dict(cells.get(pid, {}))
        if user_id:
            fields["user_id"] = user_id
        anonymous_ids, products = [], []
        for kind, key, value in keyed.get(pid, ()):
            if kind == "a":
                anonymous_ids.append(key)
            else:
                products.append((value, key))
        recent = [p for _, p in sorted(products, reverse=True)]
        document = build_profile(
            pid, fields, anonymous_ids, recent, sessions, (session_start, last_seen), traits, now_ms
        )
        document.pop("updated_at")
        yield pid, document


def recompute_documents(
    archive_root: Path,
    categories: Mapping[str, str],
    session_gap_ms: int,
    forgotten: Suppressions | None = None,
    traits: TraitSet = BUILTIN_TRAITS,
    now_ms: int | None = None,
    cut: Mapping[int, int] | None = None,
    admission: Admission = Admission(),
) -> dict[str, dict[str, Any]]:
    """Every profile's document (without ``updated_at``) recomputed from the archive, by profile id.

    What ``pulse reconcile`` and the ``profiles_batch`` asset compare live Redis with, equal to
    ``recompute_profiles`` of the same records (a property test holds them equal) at a fraction
    of its time and memory. An empty archive has no profiles.
    """
    if not has_archive(archive_root):
        return {}
    with duckdb.connect() as con:
        tables = recompute_tables(
            con, archive_root, categories, session_gap_ms, forgotten, traits, cut, admission
        )
    logger.info("recomputed %d profiles from %s", tables.profiles.num_rows, archive_root)
    return dict(documents(tables, traits, now_ms))


IDENTITY_SQL = """
-- every profile, 'u' when its id is a user id (its events are keyed by their user_id)
SELECT CASE WHEN max(user_id) IS NULL THEN 'i' ELSE 'u' END AS kind, profile_id AS id, '' AS other, 0 AS ts,
       '' AS event_id
FROM profile_events GROUP BY profile_id
UNION ALL
-- anonymous id -> each user seen with it, at its earliest event time (update.lua's owner zset)
SELECT 'o', anonymous_id, user_id, min(ts), '' FROM profile_events
WHERE user_id IS NOT NULL AND anonymous_id IS NOT NULL GROUP BY ALL
UNION ALL
-- user -> each id an identify named as its anonymous id, the earliest (ts, event_id)
SELECT 'l', user_id, anonymous_id, min(ts), arg_min(event_id, (ts, event_id)) FROM profile_events
WHERE event_type = 'identify' AND user_id IS NOT NULL AND anonymous_id IS NOT NULL AND anonymous_id <> user_id
GROUP BY ALL
"""


def identity_nodes(
    rows: Iterable[tuple[str, str, str, int, str]], unlinked: Collection[frozenset[str]] = ()
) -> dict[str, IdNode]:
    """IDENTITY_SQL's rows as identity nodes (streaming/profiles/identity_graph.py), minus unlinks."""
    users: set[str] = set()
    ids: set[str] = set()
    owners: dict[str, list[tuple[int, str]]] = {}
    links: dict[str, dict[str, tuple[int, str]]] = {}
    for kind, pid, other, ts, event_id in rows:
        ids.add(pid)
        if kind == "u":
            users.add(pid)
        elif kind == "i":
            continue
        elif frozenset((pid, other)) in unlinked:
            continue
        elif kind == "o":
            owners.setdefault(pid, []).append((ts, other))
        else:
            links.setdefault(pid, {})[other] = (ts, event_id)
    return {
        pid: IdNode(pid in users, links.get(pid, {}), tuple(u for _, u in sorted(owners.get(pid, []))))
        for pid in ids
    }


def recompute_identity(
    archive_root: Path,
    max_ids: int = DEFAULT_MAX_IDS,
    unlinked: Collection[frozenset[str]] = (),
    forgotten: Suppressions | None = None,
    cut: Mapping[int, int] | None = None,
    admission: Admission = Admission(),
) -> Resolution:
    """Every archived id's person (canonical id), the people's user ids and the user links with their
    outcome, from the archive in DuckDB: what the stream resolves at read, for the same records."""
    if not has_archive(archive_root):
        return Resolution({}, {}, [])
    with duckdb.connect() as con:
        con.register(
            "catalog",
            pa.table({"product_id": pa.array([], pa.string()), "category": pa.array([], pa.string())}),
        )
        con.register(SUPPRESSIONS_TABLE, suppressions_table(forgotten or {}))
        glob = archive_glob(archive_root)
        admitted = admission.sql(_archive_columns(con, glob))
        con.execute(profile_events_sql([], cut, admitted), {"glob": glob})
        rows = con.sql(IDENTITY_SQL).fetchall()
    return resolve(identity_nodes(rows, unlinked), max_ids)
