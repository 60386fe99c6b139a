"""Generate an event archive exactly as the archiver writes it, for the batch benchmarks.

Traffic is the demo shop's (``orchestration.demo_traffic.TrafficGenerator``: about 2% re-sent
duplicates and 1% contract violations), serialized with ``json.dumps`` as a client sends it,
plus 0.1% truncated bodies (not JSON at all). Every record goes through the archiver's own
``archive_row`` and ``ParquetArchiveSink``, so the files hold what the archiver would write
for that topic content.

Kafka model: one partition per chunk of users (records are keyed by profile, and chunks share
no user); a record arrives a few hundred ms after its event time, offsets follow arrival, and
each checkpoint of ``--checkpoint`` records of a partition makes one file per hour of event time.
Visitors start at random times over one UTC day, so the archive spans about 25 hourly folders.

Usage: .venv/bin/python -m bench.archive_gen OUT_DIR [--events 10000000] [--users 1000000]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from quixstreams.sinks import SinkBatch

from enrichment.catalog import SAMPLE_CATALOG, categories_from_rows, read_catalog_csv
from orchestration.demo_traffic import TrafficGenerator
from streaming.archiver.rows import archive_row
from streaming.archiver.sink import ParquetArchiveSink

logger = logging.getLogger(__name__)

TOPIC = "pulse.events"
DAY_START = datetime(2026, 11, 27, tzinfo=UTC)
TRUNCATED_RATE = 0.001
MEAN_ARRIVAL_LAG_MS = 400
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _event_ms(event: dict, rng: random.Random) -> int:
    """Event time of a generated event, or a time of the day for the few whose timestamp is broken."""
    try:
        return (datetime.fromisoformat(event["timestamp"]) - _EPOCH) // timedelta(milliseconds=1)
    except (KeyError, ValueError):
        return int(DAY_START.timestamp() * 1000) + rng.randrange(86_400_000)


def write_partition(
    root: Path, partition: int, events: int, users: int, seed: int, checkpoint: int
) -> dict[str, int]:
    """Generate one Kafka partition's records and archive them; return row counts."""
    categories = categories_from_rows(read_catalog_csv(SAMPLE_CATALOG))
    rng = random.Random(seed * 1_000 + partition)
    generator = TrafficGenerator(categories, users=users, seed=seed * 1_000 + partition, start=DAY_START)
    for visitor in generator.visitors:
        visitor.clock = DAY_START + timedelta(seconds=rng.uniform(0, 86_400))
    records: list[tuple[int, bytes]] = []
    for event in generator.events(events):
        raw = json.dumps(event).encode()
        arrival = _event_ms(event, rng) + 20 + int(rng.expovariate(1 / MEAN_ARRIVAL_LAG_MS))
        records.append((arrival, raw))
        if rng.random() < TRUNCATED_RATE:
            records.append((arrival + 1, raw[: len(raw) // 2]))
    generator.sent.clear()
    records.sort(key=lambda record: record[0])
    sink = ParquetArchiveSink(root)
    valid = 0
    for start in range(0, len(records), checkpoint):
        batch = SinkBatch(topic=TOPIC, partition=partition)
        for offset in range(start, min(start + checkpoint, len(records))):
            arrival, raw = records[offset]
            row = archive_row(raw, TOPIC, partition, offset, arrival)
            valid += row["valid"]
            batch.append(value=row, key=None, timestamp=arrival, headers=[], offset=offset)
        sink.write(batch)
    return {"records": len(records), "valid": valid}


def generate_archive(
    root: Path,
    *,
    events: int,
    users: int,
    partitions: int = 8,
    seed: int = 1,
    checkpoint: int = 25_000,
    workers: int = 2,
) -> dict[str, int]:
    """Write ``events`` generated events (plus truncated extras) of ``users`` visitors under root/events."""

    def share(total: int, partition: int) -> int:
        return total // partitions + (partition < total % partitions)

    jobs = [(root, p, share(events, p), share(users, p), seed, checkpoint) for p in range(partitions)]
    totals = {"records": 0, "valid": 0}
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for counts in pool.map(write_partition, *zip(*jobs, strict=True)):
            for name, value in counts.items():
                totals[name] += value
    totals["files"] = sum(1 for _ in (root / "events").glob("dt=*/hour=*/*.parquet"))
    totals["bytes"] = sum(f.stat().st_size for f in (root / "events").glob("dt=*/hour=*/*.parquet"))
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path, help="archive root (files go to OUT/events/dt=/hour=)")
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--checkpoint", type=int, default=25_000, help="records per partition and checkpoint")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    began = time.perf_counter()
    totals = generate_archive(
        args.out,
        events=args.events,
        users=args.users,
        partitions=args.partitions,
        seed=args.seed,
        checkpoint=args.checkpoint,
        workers=args.workers,
    )
    print(
        f"{totals['records']:,} records ({totals['records'] - totals['valid']:,} invalid) "
        f"in {totals['files']:,} files, "
        f"{totals['bytes'] / 2**20:,.0f} MiB, in {time.perf_counter() - began:.0f} s"
    )


if __name__ == "__main__":
    main()
