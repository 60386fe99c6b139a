"""Analyst queries over a day of archive before and after compaction (assets/archive_compaction.py).

Generates a day of archive as the archiver writes it (``bench.archive_gen``, small checkpoints,
so many small files per hour), creates the analyst views (``assets.analyst_views``), times a
few typical queries, compacts every hour, and times them again in the same run. Prints the
files, bytes and the median time per query before and after, and their ratio.

Usage: .venv/bin/python -m bench.archive_compaction [--events 500000] [--checkpoint 500] [--repeat 5]
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import duckdb

from assets.analyst_views import create_views
from assets.archive_compaction import compact_hour
from bench.archive_gen import generate_archive
from core.archive_layout import events_folder, hour_folders

QUERIES = {
    "events by type": "SELECT event_type, count(*) FROM events GROUP BY 1",
    "events per hour": "SELECT dt, hour, count(*) FROM events GROUP BY ALL ORDER BY ALL",
    "a slice of visitors": "SELECT count(*) FROM events WHERE anonymous_id LIKE 'anon-00%'",
    "invalid by error": "SELECT split_part(error, ':', 1), count(*) FROM events_invalid GROUP BY 1",
}


def time_queries(database: Path, repeat: int) -> dict[str, float]:
    """Median seconds of each query over ``repeat`` runs, on a fresh connection each run."""
    medians = {}
    for name, sql in QUERIES.items():
        runs = []
        for _ in range(repeat):
            with duckdb.connect(str(database), read_only=True) as con:
                began = time.perf_counter()
                con.execute(sql).fetchall()
                runs.append(time.perf_counter() - began)
        medians[name] = statistics.median(runs)
    return medians


def archive_size(root: Path) -> tuple[int, int]:
    paths = list(events_folder(root).glob("dt=*/hour=*/*.parquet"))
    return len(paths), sum(p.stat().st_size for p in paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--checkpoint", type=int, default=500, help="records per partition and checkpoint")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root, database = Path(tmp) / "archive", Path(tmp) / "pulse.duckdb"
        generate_archive(root, events=args.events, users=args.users, checkpoint=args.checkpoint)
        files_before, bytes_before = archive_size(root)
        create_views(database, root)
        before = time_queries(database, args.repeat)
        began = time.perf_counter()
        for folder in hour_folders(root):
            compact_hour(folder)
        compaction_s = time.perf_counter() - began
        files_after, bytes_after = archive_size(root)
        create_views(database, root)
        after = time_queries(database, args.repeat)
    print(
        f"{args.events:,} events: {files_before:,} files ({bytes_before / 2**20:.1f} MiB) before, "
        f"{files_after:,} files ({bytes_after / 2**20:.1f} MiB) after; compaction took {compaction_s:.1f} s"
    )
    print(f"{'query':<20} {'before s':>9} {'after s':>9} {'before/after':>13}")
    for name in QUERIES:
        print(f"{name:<20} {before[name]:>9.3f} {after[name]:>9.3f} {before[name] / after[name]:>12.1f}x")


if __name__ == "__main__":
    main()
