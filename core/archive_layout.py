"""Where the event archive's Parquet files live, and the one way to read each Kafka record once.

The archiver writes ``<root>/events/dt=YYYY-MM-DD/hour=HH/part-<topic>-<partition>-<first>-<last>.parquet``
for the events topic, and the dead-letter topic the same way under ``<root>/dead_letters/``: a
folder of its own, so no reader of events (replay, reconcile, compaction) ever meets a dead letter;
a checkpoint archived twice (a crash between the file and the offset commit) leaves two files
holding the same Kafka records, so every reader deduplicates by Kafka coordinates.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

#: The deduplication every reader of archive rows applies: one row per Kafka record.
ONE_ROW_PER_RECORD = "QUALIFY row_number() OVER (PARTITION BY kafka_topic, kafka_partition, kafka_offset) = 1"


def events_folder(root: Path) -> Path:
    """The folder of the hive-partitioned event files."""
    return root / "events"


def partition_folder(root: Path, dt: str, hour: str) -> Path:
    """The folder of one UTC hour of event time."""
    return events_folder(root) / f"dt={dt}" / f"hour={hour}"


def archive_glob(root: Path) -> str:
    """Every archive file, as a glob DuckDB reads."""
    return str(events_folder(root) / "dt=*" / "hour=*" / "*.parquet")


def dead_letters_folder(root: Path) -> Path:
    """The folder of the hive-partitioned dead-letter files (the archived DLQ topic)."""
    return root / "dead_letters"


def dead_letter_partition_folder(root: Path, dt: str, hour: str) -> Path:
    """The folder of one UTC hour of dead letters (by the time the broker received them)."""
    return dead_letters_folder(root) / f"dt={dt}" / f"hour={hour}"


def dead_letters_glob(root: Path) -> str:
    """Every dead-letter file, as a glob DuckDB reads."""
    return str(dead_letters_folder(root) / "dt=*" / "hour=*" / "*.parquet")


def has_dead_letters(root: Path) -> bool:
    """True once the archiver has written at least one dead-letter file."""
    return any(dead_letters_folder(root).glob("dt=*/hour=*/*.parquet"))


def dead_letter_records_sql(root: Path, where: str = "TRUE") -> str:
    """A SELECT of the archived dead letters matching ``where``, each Kafka record once."""
    glob = dead_letters_glob(root).replace("'", "''")
    return (
        f"SELECT * FROM read_parquet('{glob}', hive_partitioning = true, union_by_name = true) "
        f"WHERE {where} {ONE_ROW_PER_RECORD}"
    )


def has_archive(root: Path) -> bool:
    """True once the archiver has written at least one file."""
    return any(events_folder(root).glob("dt=*/hour=*/*.parquet"))


def archive_records_sql(root: Path, where: str = "TRUE") -> str:
    """A SELECT of the archive rows matching ``where`` (SQL over archive columns), each Kafka record once."""
    glob = archive_glob(root).replace("'", "''")
    return (
        f"SELECT * FROM read_parquet('{glob}', hive_partitioning = true, union_by_name = true) "
        f"WHERE {where} {ONE_ROW_PER_RECORD}"
    )


def hour_folders(root: Path) -> list[Path]:
    """Every ``dt=/hour=`` folder of the archive, oldest first."""
    return sorted(events_folder(root).glob("dt=*/hour=*"))


@contextmanager
def rewriting(root: Path) -> Iterator[None]:
    """Hold the archive's rewrite lock: one rewriter of existing files at a time (forget, compaction).

    The archiver only adds files, so it never takes it. A lock file on the archive's own disk:
    rewriters on other machines of a shared archive need a lock of their own.
    """
    events_folder(root).mkdir(parents=True, exist_ok=True)
    with open(events_folder(root) / ".rewrite.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def before_cut_sql(cut: Mapping[int, int] | None) -> str:
    """SQL true for archive rows before ``cut`` (partition -> first offset left out; others: none kept)."""
    if cut is None:
        return "TRUE"
    cases = " ".join(f"WHEN {int(p)} THEN {int(offset)}" for p, offset in sorted(cut.items()))
    return f"kafka_offset < (CASE kafka_partition {cases} ELSE 0 END)" if cases else "FALSE"


def earlier_cut(a: Mapping[int, int], b: Mapping[int, int]) -> dict[int, int]:
    """The earlier of two cuts, partition by partition; a partition absent from either keeps nothing."""
    return {p: min(a[p], b[p]) for p in a.keys() & b.keys()}
