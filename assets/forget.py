"""Forget-me in the archive: rewrite Parquet files without the rows of forgotten users."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.archive_layout import dead_letters_folder, events_folder, rewriting

logger = logging.getLogger(__name__)


def purge_archive(root: Path, forgotten: set[str]) -> dict[str, int]:
    """Drop every row whose user_id or anonymous_id is forgotten; return files and rows changed.

    Each file is rewritten under a temporary name and renamed, so readers see the old or the
    new file, never half of one. Dead letters are purged too, by the ids their original JSON
    names (streaming/archiver/dead_letters.py); invalid event rows have no parsed ids and are left.
    """
    if not forgotten:
        return {"files_rewritten": 0, "rows_removed": 0}
    with rewriting(root):
        files, rows = _purge(root, list(forgotten))
    logger.info("purged %d rows of %d forgotten ids from %d files", rows, len(forgotten), files)
    return {"files_rewritten": files, "rows_removed": rows}


def _purge(root: Path, ids: list[str]) -> tuple[int, int]:
    files = rows = 0
    paths = [
        *events_folder(root).glob("dt=*/hour=*/*.parquet"),
        *dead_letters_folder(root).glob("dt=*/hour=*/*.parquet"),
    ]
    for path in sorted(paths):
        table = pq.read_table(path)
        doomed = pc.or_kleene(
            pc.is_in(table["user_id"], value_set=_array(ids)),
            pc.is_in(table["anonymous_id"], value_set=_array(ids)),
        )
        doomed = pc.fill_null(doomed, False)
        removed = pc.sum(doomed).as_py() or 0
        if not removed:
            continue
        tmp = path.with_name(f".{path.name}.tmp")
        pq.write_table(table.filter(pc.invert(doomed)), tmp)
        os.replace(tmp, path)
        files += 1
        rows += removed
    return files, rows


def _array(values: list[str]):
    import pyarrow as pa

    return pa.array(values, type=pa.string())
