"""SIGKILL and SIGSTOP of archivers at random points: the archive still holds every acknowledged event.

Two `pulse run archiver` instances share three partitions. A SIGKILL leaves a checkpoint's files
written but its offsets not committed, so the batch is written again (another file, same Kafka
coordinates); a SIGSTOP past the session timeout and `max.poll.interval.ms` hands the partitions to
the other instance and wakes a zombie that may still flush its batch. Readers dedupe by
(topic, partition, offset), as `assets/archive.py` does.
"""

from __future__ import annotations

import time

import pyarrow.parquet as pq
import pytest

from orchestration.demo_traffic import TrafficGenerator
from tests.faults.chaos import PacedPoster, committed_offsets, publish_sample_catalog, sleep_until, wait_for
from tests.faults.invariants import check_archive, observe_unplanned_exits
from tests.integration.helpers import post_batches

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EVENTS = 8_000
TRAFFIC_SECONDS = 20.0
MAX_POLL_INTERVAL_MS = 5000
STOP_SECONDS = 8.0


def _readable(path) -> bool:
    try:
        pq.read_metadata(path)
    except Exception:  # noqa: BLE001 - any failure means a torn file
        return False
    return True


def _committed(settings) -> dict[int, int]:
    return committed_offsets(settings.kafka_brokers, settings.archiver_consumer_group, settings.topic_events)


def _archived_files(settings) -> int:
    return sum(1 for _ in (settings.archive_path / "events").glob("dt=*/hour=*/*.parquet"))


@pytest.mark.fault("SIGKILL + SIGSTOP of archivers (2 instances, 3 partitions)")
@pytest.mark.usefixtures("redis_client")  # a clean session Redis
def test_archivers_killed_and_stopped_at_random_points(settings, launch, supervise, rng, fault_run):
    catalog = publish_sample_catalog(settings.redis_url)
    chaos = settings.model_copy(update={"kafka_config": {"max.poll.interval.ms": MAX_POLL_INTERVAL_MS}})
    launch("api", settings)
    archivers = supervise(lambda _name: launch("archiver", chaos), ["a", "b"])
    base = f"http://{settings.api_host}:{settings.api_port}"
    events = list(TrafficGenerator(catalog.categories, users=300, seed=rng.randrange(10**6)).events(EVENTS))
    # A first batch, archived before the paced traffic starts: the group has formed when faults begin.
    warmup = post_batches(base, "test-write", events[:100], batch_size=100)
    wait_for(lambda: _archived_files(settings) > 0, 60, "the first archive file")
    poster = PacedPoster(base, "test-write", events[100:], batch_size=100, seconds=TRAFFIC_SECONDS)
    t0 = time.monotonic()
    poster.start()

    def at() -> str:
        return f"{poster.progress:.0%} acknowledged, {_archived_files(settings)} files"

    sleep_until(t0 + rng.uniform(2.0, 5.0))
    when = at()
    down = rng.uniform(0.0, 2.0)
    archivers.kill("a", between=lambda: time.sleep(down))
    fault_run.inject(f"SIGKILL a at {when}; restarted {down:.1f}s later")

    sleep_until(t0 + rng.uniform(7.0, 9.0))
    archivers.pause("b")
    when = at()
    stopped_at = time.monotonic()
    sleep_until(stopped_at + 1.0)
    committed_early = _committed(settings)
    sleep_until(stopped_at + STOP_SECONDS)
    committed_late = _committed(settings)
    archivers.resume("b")
    fault_run.inject(
        f"SIGSTOP b for {STOP_SECONDS:.0f}s "
        f"(> session 3s, max.poll.interval {MAX_POLL_INTERVAL_MS / 1000:.0f}s) at {when}; SIGCONT"
    )

    sleep_until(t0 + rng.uniform(TRAFFIC_SECONDS - 5.0, TRAFFIC_SECONDS - 1.0))
    when = at()
    archivers.kill("a", "b")
    fault_run.inject(f"SIGKILL a and b together at {when}; restarted")

    acknowledged = warmup + poster.join_and_check(120)
    check_archive(fault_run, settings, acknowledged)
    advanced = {
        p: (committed_early.get(p, -1), committed_late.get(p, -1)) for p in range(settings.topic_partitions)
    }
    # Observed, not asserted: survivors sometimes exit on "Unknown member" and their restarts stall
    # the group for a while (see docs/reliability.md, known issues); the data invariants still hold.
    fault_run.observe(
        "the group rebalanced: every partition committed progress while b was stopped",
        all(late > early for early, late in advanced.values()),
        f"committed offsets 1s into the stop -> at SIGCONT: {advanced}",
    )
    files = list((settings.archive_path / "events").glob("dt=*/hour=*/*.parquet"))
    torn = [path.name for path in files if not _readable(path)]
    tmp = list((settings.archive_path / "events").rglob(".*.tmp"))
    fault_run.check(
        "no torn Parquet file visible to readers",
        not torn,
        f"{len(files)} files, all readable; {len(tmp)} hidden .tmp files left by kills (readers skip them)"
        if not torn
        else f"torn: {torn[:3]}",
    )
    observe_unplanned_exits(fault_run, archivers)
