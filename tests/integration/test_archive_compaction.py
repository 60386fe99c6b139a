"""Archive compaction keeps exactly the same rows: real Parquet files as the archiver writes them, read
with DuckDB."""

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from assets.archive import read_valid_events
from assets.archive_compaction import COMPACTED_PREFIX, archive_compaction, compact_hour, hour_folder_of
from assets.batch_sql import recompute_documents
from core.archive_layout import archive_records_sql, hour_folders, partition_folder
from core.resources import PulseResource
from enrichment.catalog import SAMPLE_CATALOG, categories_from_rows, read_catalog_csv
from orchestration.demo_traffic import TrafficGenerator
from streaming.archiver.rows import ARCHIVE_SCHEMA, archive_row, hive_partition

pytestmark = pytest.mark.integration

TOPIC = "pulse.events"
START = datetime(2026, 11, 27, 9, 40, tzinfo=UTC)
GAP_MS = 30 * 60_000
#: Profiles are read at one fixed time: decayed interests read at "now" change between two reads.
READ_AT_MS = int((START + timedelta(hours=3)).timestamp() * 1000)


def write_checkpoint(root: Path, records: list[tuple[int, int, bytes, int]]) -> None:
    """Files as the archiver writes one checkpoint: one per hour of event time, named by offsets."""
    rows = [archive_row(raw, TOPIC, partition, offset, ts) for partition, offset, raw, ts in records]
    by_hour: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        by_hour.setdefault(hive_partition(row["event_time"]), []).append(row)
    partition, first, last = records[0][0], records[0][1], records[-1][1]
    for (dt, hour), hour_rows in by_hour.items():
        folder = partition_folder(root, dt, hour)
        folder.mkdir(parents=True, exist_ok=True)
        name = f"part-{TOPIC}-{partition}-{first:012d}-{last:012d}.parquet"
        pq.write_table(pa.Table.from_pylist(hour_rows, schema=ARCHIVE_SCHEMA), folder / name)


def archive(root: Path, seed: int = 3, events: int = 1200) -> list[tuple[int, int, bytes, int]]:
    """Demo traffic over two hours, in two partitions, checkpoints of 50, one checkpoint archived twice."""
    generator = TrafficGenerator(
        {"p1": "shoes", "p2": "books", "p3": "toys"}, users=40, seed=seed, start=START
    )
    rng = random.Random(seed)
    records: dict[int, list[tuple[int, int, bytes, int]]] = {0: [], 1: []}
    for event in generator.events(events):
        partition = rng.randrange(2)
        arrival = int((START + timedelta(seconds=rng.uniform(0, 7200))).timestamp() * 1000)
        raw = json.dumps(event).encode() if rng.random() > 0.01 else b'{"truncated'
        records[partition].append((partition, len(records[partition]), raw, arrival))
    for partition_records in records.values():
        for i in range(0, len(partition_records), 50):
            write_checkpoint(root, partition_records[i : i + 50])
    write_checkpoint(root, records[0][100:150])  # a crash between the file and the offset commit
    return records[0] + records[1]


def snapshot(root: Path) -> dict[str, object]:
    """Everything a reader of the archive sees."""
    with duckdb.connect() as con:
        rows = con.sql(f"SELECT * EXCLUDE (dt, hour) FROM ({archive_records_sql(root)})").fetchall()
    categories = categories_from_rows(read_catalog_csv(SAMPLE_CATALOG))
    return {
        "rows": sorted(rows, key=lambda r: (r[8], r[9], r[10])),
        "valid_events": read_valid_events(root),
        "profiles": recompute_documents(root, categories, GAP_MS, now_ms=READ_AT_MS),
    }


def files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.parquet"))


def test_compaction_keeps_every_record_once_and_leaves_one_file_per_hour(tmp_path):
    root = tmp_path / "archive"
    records = archive(root)
    before = snapshot(root)
    assert len(before["rows"]) == len(records)  # the copies of the checkpoint archived twice count once
    folders = hour_folders(root)
    assert len(folders) >= 2 and all(len(files(f)) > 1 for f in folders)
    copies = sum(pq.ParquetFile(f).metadata.num_rows for folder in folders for f in files(folder))

    results = [compact_hour(folder) for folder in folders]

    assert all(len(files(f)) == 1 and files(f)[0].name.startswith(COMPACTED_PREFIX) for f in folders)
    assert sum(r.rows_before for r in results) == copies
    assert sum(r.rows_after for r in results) == len(records)
    assert pq.read_schema(files(folders[0])[0]).remove_metadata() == ARCHIVE_SCHEMA
    assert snapshot(root) == before
    assert not list(root.rglob("*.tmp"))


def test_a_late_file_after_compaction_is_merged_by_the_next_run(tmp_path):
    root = tmp_path / "archive"
    archive(root, events=300)
    folder = hour_folders(root)[0]
    compact_hour(folder)
    (compacted,) = files(folder)
    hour_start = datetime.strptime(f"{folder.parent.name} {folder.name}", "dt=%Y-%m-%d hour=%H").replace(
        tzinfo=UTC
    )
    late = {
        "event_id": "123e4567-e89b-12d3-a456-426614174999",
        "event_type": "page_view",
        "user_id": "late",
        "timestamp": (hour_start + timedelta(minutes=1)).isoformat(),
    }
    late_ms = int(hour_start.timestamp() * 1000)
    write_checkpoint(root, [(1, 10_000, json.dumps(late).encode(), late_ms + 3_600_000)])
    assert len(files(folder)) == 2
    before = snapshot(root)

    result = compact_hour(folder)

    assert result is not None and result.files_before == 2
    assert len(files(folder)) == 1 and files(folder)[0] != compacted
    assert snapshot(root) == before
    assert compact_hour(folder) is None  # one file: nothing to do


def test_the_dagster_asset_compacts_its_hour(tmp_path):
    data = tmp_path / "pulse"
    archive(data / "archive", events=300)
    folder = hour_folders(data / "archive")[0]
    key = f"{folder.parent.name[3:]}-{folder.name[5:]}:00"
    assert hour_folder_of(data / "archive", key) == folder
    pulse = PulseResource(data_dir=str(data), redis_url="redis://127.0.0.1:1/0", kafka_brokers="127.0.0.1:1")

    result = dg.materialize([archive_compaction], resources={"pulse": pulse}, partition_key=key)

    assert result.success
    metadata = result.asset_materializations_for_node("archive_compaction")[0].metadata
    assert metadata["compacted"].value is True and metadata["files_before"].value > 1
    assert len(files(folder)) == 1
