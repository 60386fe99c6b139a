"""Forget-me in the archive and the DuckDB file: remove a forgotten person's rows up to the forget time.

Valid event rows go by the forget rule's time (event time <= forget time) but by either id they
name (user_id or anonymous_id); invalid rows and dead letters, which have no trusted event time,
by the time the broker received them, with the ids their original JSON names
(streaming/archiver/dead_letters.py ``ids_of``). Rows of a forgotten person's later return stay.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.archive_layout import dead_letters_folder, events_folder, rewriting
from core.forgetting import SUPPRESSIONS_TABLE, Suppressions, forgotten_sql, is_forgotten, suppressions_table
from streaming.archiver.dead_letters import ids_of

logger = logging.getLogger(__name__)

#: What a purge counts per id: rows of the events archive (valid, invalid), of the dead-letter archive,
#: and of the analysts' DuckDB tables.
KINDS = ("valid", "invalid", "dead_letters", "duckdb_profiles_batch", "duckdb_sessions")


@dataclass
class PurgeResult:
    """What one purge removed: files rewritten, and rows per forgotten id and kind (KINDS)."""

    files_rewritten: int = 0
    per_id: dict[str, dict[str, int]] = field(
        default_factory=lambda: defaultdict(lambda: dict.fromkeys(KINDS, 0))
    )

    @property
    def rows_removed(self) -> int:
        return sum(n for counts in self.per_id.values() for n in counts.values())

    def totals(self) -> dict[str, int]:
        return {kind: sum(counts[kind] for counts in self.per_id.values()) for kind in KINDS}

    def as_dict(self) -> dict[str, Any]:
        return {
            "files_rewritten": self.files_rewritten,
            "rows_removed": self.rows_removed,
            **self.totals(),
            "per_id": {pid: dict(counts) for pid, counts in sorted(self.per_id.items())},
        }


def row_forgotten_id(
    valid: bool, user_id: str | None, anonymous_id: str | None, ms: int, forgotten: Suppressions
) -> str | None:
    """The forgotten id a row is purged for (its user_id first), or None (pure).

    ``ms`` is the row's event time when valid, else the time the broker received it.
    """
    for profile_id in (user_id, anonymous_id):
        if is_forgotten(profile_id, ms, forgotten):
            return profile_id
    return None


def purge_archive(root: Path, forgotten: Suppressions, duckdb_file: Path | None = None) -> PurgeResult:
    """Remove every archived row (valid, invalid, dead letter) and DuckDB table row of forgotten ids
    up to their forget time.

    Each file is rewritten under a temporary name and renamed, so readers see the old or the
    new file, never half of one.
    """
    result = PurgeResult()
    if not forgotten:
        return result
    with rewriting(root):
        for path in sorted(events_folder(root).glob("dt=*/hour=*/*.parquet")):
            _purge_file(path, forgotten, result, dead_letters=False)
        for path in sorted(dead_letters_folder(root).glob("dt=*/hour=*/*.parquet")):
            _purge_file(path, forgotten, result, dead_letters=True)
    if duckdb_file is not None and duckdb_file.exists():
        _purge_duckdb(duckdb_file, forgotten, result)
    logger.info(
        "purged %d rows of %d ids (of %d forgotten) from %d files",
        result.rows_removed,
        len(result.per_id),
        len(forgotten),
        result.files_rewritten,
    )
    return result


def _purge_file(path: Path, forgotten: Suppressions, result: PurgeResult, *, dead_letters: bool) -> None:
    table = pq.read_table(path)
    ids = pa.array(list(forgotten), pa.string())
    valid = pc.fill_null(table["valid"], False)
    if dead_letters:
        candidates = pc.fill_null(
            pc.or_kleene(
                pc.is_in(table["user_id"], value_set=ids), pc.is_in(table["anonymous_id"], value_set=ids)
            ),
            False,
        )
    else:  # valid rows by their columns; invalid rows have no parsed ids: each is read below
        named = pc.or_kleene(
            pc.is_in(table["user_id"], value_set=ids), pc.is_in(table["anonymous_id"], value_set=ids)
        )
        candidates = pc.or_(pc.fill_null(named, False), pc.invert(valid))
    rows = pc.indices_nonzero(candidates).to_pylist()
    if not rows:
        return
    doomed = [False] * table.num_rows
    removed: list[tuple[str, str]] = []
    for i in rows:
        is_valid = not dead_letters and bool(valid[i].as_py())
        if is_valid:
            user_id, anonymous_id = table["user_id"][i].as_py(), table["anonymous_id"][i].as_py()
            ms = table["event_time"][i].value
        else:
            if dead_letters:
                user_id, anonymous_id = table["user_id"][i].as_py(), table["anonymous_id"][i].as_py()
            else:
                found = ids_of(table["raw"][i].as_py() or b"")
                user_id, anonymous_id = found["user_id"], found["anonymous_id"]
            ms = table["kafka_timestamp"][i].value
        profile_id = row_forgotten_id(is_valid, user_id, anonymous_id, ms, forgotten)
        if profile_id is not None:
            doomed[i] = True
            removed.append(
                (profile_id, "dead_letters" if dead_letters else "valid" if is_valid else "invalid")
            )
    if not removed:
        return
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table.filter(pc.invert(pa.array(doomed))), tmp)
    os.replace(tmp, path)
    result.files_rewritten += 1
    for profile_id, kind in removed:
        result.per_id[profile_id][kind] += 1


#: The analysts' tables (assets/batch_tables.py) and the time each row is judged by.
_DUCKDB_TABLES = (("profiles_batch", "first_seen"), ("sessions", "started_at"))


def _purge_duckdb(path: Path, forgotten: Suppressions, result: PurgeResult) -> None:
    with duckdb.connect(str(path)) as con:
        con.register(SUPPRESSIONS_TABLE, suppressions_table(forgotten))
        present = {row[0] for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        for name, time_column in _DUCKDB_TABLES:
            if name not in present:
                continue
            where = forgotten_sql("profile_id", f"epoch_ms({time_column})")
            counts = con.execute(
                f"SELECT profile_id, count(*) FROM {name} WHERE {where} GROUP BY ALL"
            ).fetchall()
            if counts:
                con.execute(f"DELETE FROM {name} WHERE {where}")
            for profile_id, n in counts:
                result.per_id[profile_id][f"duckdb_{name}"] += n
