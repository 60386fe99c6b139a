"""Archive compaction: one Parquet file per hour instead of one per archiver checkpoint.

The archiver writes a file per partition, checkpoint and hour of event time every few seconds,
so a busy hour holds hundreds of small files, and every analyst query opens them all. Compacting
an hour reads its files, keeps each Kafka record once (a checkpoint archived twice leaves copies),
writes one file under a temporary name, renames it, and only then deletes the files it read.
Readers deduplicate by Kafka coordinates, so the moment when both the new file and the old ones
exist counts nothing twice, and a file the archiver adds meanwhile (a late event) is left for
the next run. Forget rewrites files too: both hold the archive's rewrite lock.
"""

import logging
import os
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow.parquet as pq

from core.archive_layout import partition_folder, rewriting
from core.resources import PulseResource
from streaming.archiver.rows import conform

logger = logging.getLogger(__name__)

COMPACTED_PREFIX = "compacted-"


@dataclass(frozen=True)
class Compaction:
    """What compacting one hour folder did."""

    files_before: int
    rows_before: int  # with the copies of records archived twice
    rows_after: int  # one per Kafka record
    bytes_before: int
    bytes_after: int

    def as_metadata(self) -> dict[str, int]:
        return asdict(self)


def compact_hour(folder: Path) -> Compaction | None:
    """Merge the hour's files into one, each Kafka record once; None when there is nothing to merge."""
    with rewriting(folder.parent.parent.parent):
        files = sorted(folder.glob("*.parquet"))
        if len(files) < 2:
            return None
        with duckdb.connect() as con:
            source = con.sql(
                "SELECT * EXCLUDE (filename) FROM read_parquet($files, hive_partitioning = false, "
                "union_by_name = true, filename = true) "
                "QUALIFY row_number() OVER (PARTITION BY kafka_topic, kafka_partition, kafka_offset "
                "ORDER BY filename) = 1 "
                "ORDER BY kafka_topic, kafka_partition, kafka_offset",
                params={"files": [str(f) for f in files]},
            )
            table = conform(source.to_arrow_table())  # an hour of older files lacks newer columns
            rows_before = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        name = f"{COMPACTED_PREFIX}{uuid.uuid4().hex}.parquet"
        tmp = folder / f".{name}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, folder / name)
        bytes_before = sum(f.stat().st_size for f in files)
        for f in files:
            f.unlink()
    result = Compaction(len(files), rows_before, table.num_rows, bytes_before, (folder / name).stat().st_size)
    logger.info("compacted %s: %s", folder, result)
    return result


#: One partition per UTC hour of event time, as the archive's dt=/hour= folders.
ARCHIVE_HOURS = dg.HourlyPartitionsDefinition(start_date="2024-01-01-00:00")


def hour_folder_of(root: Path, partition_key: str) -> Path:
    """The archive folder of an hourly partition key (``2024-05-01-13:00``)."""
    moment = datetime.strptime(partition_key, "%Y-%m-%d-%H:%M")
    return partition_folder(root, moment.strftime("%Y-%m-%d"), moment.strftime("%H"))


@dg.asset(partitions_def=ARCHIVE_HOURS, kinds={"duckdb", "parquet"}, group_name="archive")
def archive_compaction(context: dg.AssetExecutionContext, pulse: PulseResource) -> dg.MaterializeResult:
    """The hour's archive files merged into one (each Kafka record once); rerun after late events."""
    folder = hour_folder_of(pulse.settings().archive_path, context.partition_key)
    result = compact_hour(folder)
    if result is None:
        return dg.MaterializeResult(metadata={"folder": str(folder), "files_before": 0, "compacted": False})
    return dg.MaterializeResult(metadata={"folder": str(folder), "compacted": True, **result.as_metadata()})


archive_compaction_job = dg.define_asset_job(
    "archive_compaction_job", selection=[archive_compaction], partitions_def=ARCHIVE_HOURS
)
#: Half an hour after each hour closes, compact it (late events that come later wait for a rerun).
archive_compaction_schedule = dg.build_schedule_from_partitioned_job(
    archive_compaction_job, minute_of_hour=30, default_status=dg.DefaultScheduleStatus.RUNNING
)
