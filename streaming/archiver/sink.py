"""Quix sink writing archive rows to Parquet under ``events/dt=YYYY-MM-DD/hour=HH/`` (or another layout)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from quixstreams.sinks import BatchingSink, SinkBatch

from core.archive_layout import partition_folder
from streaming.archiver.rows import ARCHIVE_SCHEMA, HOUR_MS, archive_table, hour_partition

logger = logging.getLogger(__name__)


class ParquetArchiveSink(BatchingSink):
    """One Parquet file per checkpoint, Kafka partition and hour of event time.

    File names carry the Kafka partition and offset range, and rows carry partition and
    offset, so a batch redelivered after a crash can be told apart and deduplicated.
    Files are written to a temporary name and renamed, so readers never see half a file.
    """

    def __init__(
        self,
        root: Path,
        *,
        schema: pa.Schema = ARCHIVE_SCHEMA,
        folder: Callable[[Path, str, str], Path] = partition_folder,
    ) -> None:
        super().__init__()
        self._root = root
        self._schema = schema
        self._folder = folder

    def setup(self) -> None:
        """Called by Quix at start-up. pyarrow imports pandas at its first conversion of Python
        values (about 1.3 CPU s); doing it here keeps that out of the first checkpoint."""
        pa.Table.from_pylist([], schema=self._schema)
        pa.array([None], pa.string())

    def write(self, batch: SinkBatch) -> None:
        table = self.table_of(batch)
        first, last = batch.start_offset, max(item.offset for item in batch)
        name = f"part-{batch.topic}-{batch.partition}-{first:012d}-{last:012d}.parquet"
        hours = hour_groups(table)
        for (dt, hour), rows in hours:
            folder = self._folder(self._root, dt, hour)
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{name}.tmp"
            pq.write_table(rows, tmp)
            os.replace(tmp, folder / name)
        logger.debug(
            "archived %d records of %s[%d] into %d files",
            batch.size,
            batch.topic,
            batch.partition,
            len(hours),
        )

    def table_of(self, batch: SinkBatch) -> pa.Table:
        """The batch's rows: each item's value is a row (dict) of the sink's schema."""
        return pa.Table.from_pylist([item.value for item in batch], schema=self._schema)


class RawEventArchiveSink(ParquetArchiveSink):
    """The events topic's sink: takes the raw records and builds their rows column by column."""

    def table_of(self, batch: SinkBatch) -> pa.Table:
        records = ((item.value, item.offset, item.timestamp) for item in batch)
        return archive_table(records, batch.topic, batch.partition)


def hour_groups(table: pa.Table) -> list[tuple[tuple[str, str], pa.Table]]:
    """The rows of ``table`` per (dt, hour) of their ``event_time`` (UTC), in order of first row."""
    rows_by_hour: dict[int, list[int]] = {}
    for row, ms in enumerate(table.column("event_time").cast(pa.int64()).to_pylist()):
        rows_by_hour.setdefault(ms // HOUR_MS, []).append(row)
    if len(rows_by_hour) == 1:
        ((hour, _rows),) = rows_by_hour.items()
        return [(hour_partition(hour), table)]
    return [(hour_partition(hour), table.take(rows)) for hour, rows in rows_by_hour.items()]
