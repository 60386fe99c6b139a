"""Invariants checked after every fault, against the ground truth of acknowledged events."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from assets.archive import read_valid_events
from core.archive_layout import archive_glob, has_archive
from core.settings import PulseSettings
from enrichment.catalog import Catalog
from quality.event_contract import EventContractError, validate_event
from tests.faults.chaos import Supervisor
from tests.faults.report import FaultRun
from tests.integration.helpers import ground_truth, store_for, wait_for_profiles

#: Fields whose value depends on the order of a person's events.
ORDER_SENSITIVE = ("first_seen", "last_seen", "cart", "last_products", "session_count")


def is_valid(event: dict[str, Any]) -> bool:
    try:
        validate_event(event)
    except EventContractError:
        return False
    return True


def check_profiles(
    run: FaultRun,
    settings: PulseSettings,
    catalog: Catalog,
    acknowledged: list[dict[str, Any]],
    timeout: float = 120,
) -> None:
    """Live profiles equal a batch recompute of the acknowledged events; each valid event counted once."""
    gap_ms = settings.session_timeout_seconds * 1000
    expected = ground_truth(acknowledged, catalog, gap_ms)
    store = store_for(settings.redis_url, gap_ms)
    began = time.monotonic()
    live = wait_for_profiles(store, expected, timeout=timeout)
    waited = time.monotonic() - began
    store.client.close()
    distinct = len({e["event_id"] for e in acknowledged if is_valid(e)})
    counted = sum((doc or {}).get("event_count", 0) for doc in live.values())
    run.check(
        "each acknowledged valid event counted exactly once",
        counted == distinct,
        f"sum(event_count) {counted} = {distinct} distinct valid events of {len(acknowledged)} acknowledged",
    )
    ordered = [
        pid
        for pid in expected
        if live[pid] is None or any(live[pid][f] != expected[pid][f] for f in ORDER_SENSITIVE)
    ]
    run.check(
        "per-person order: last_seen, first_seen, cart, last_products, sessions = truth",
        not ordered,
        f"{len(expected) - len(ordered)}/{len(expected)} people"
        + (f"; differ e.g. {_diff(live, expected, ordered[:2])}" if ordered else ""),
    )
    wrong = [pid for pid in expected if live[pid] != expected[pid]]
    run.check(
        "profiles == batch recompute of acknowledged events",
        not wrong,
        f"{len(expected) - len(wrong)}/{len(expected)} profiles equal, "
        f"converged {waited:.1f}s after the traffic ended"
        + (f"; differ e.g. {_diff(live, expected, wrong[:2])}" if wrong else ""),
    )


def _diff(live: dict[str, dict | None], expected: dict[str, dict], ids: Iterable[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pid in ids:
        doc = live[pid] or {}
        out[pid] = {k: (doc.get(k), v) for k, v in expected[pid].items() if doc.get(k) != v}
    return out


def observe_unplanned_exits(run: FaultRun, supervisor: Supervisor) -> None:
    """Report processes that exited on their own (observed: the supervisor restarted them)."""
    exits = supervisor.unplanned
    run.observe(
        "no app exits on its own (a supervisor restarts any that do, as `pulse up`/Compose/k8s do)",
        not exits,
        f"{len(exits)} unplanned exits" + (f": {'; '.join(exits[:2])}" if exits else ""),
    )


def read_topic_to_end(
    settings: PulseSettings, topic: str, partitions: int, idle_seconds: float = 2.0, timeout: float = 30
) -> list[Any]:
    """Every record of ``topic`` (all partitions, from the beginning), read until idle for
    ``idle_seconds``.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_brokers,
            "group.id": f"faults-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 5,
        }
    )
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while time.monotonic() - last < idle_seconds and time.monotonic() < deadline:
            msg = consumer.poll(0.1)
            if msg is not None and msg.error() is None:
                records.append(msg)
                last = time.monotonic()
        return records
    finally:
        consumer.close()


def check_dlq(
    run: FaultRun, settings: PulseSettings, acknowledged: list[dict[str, Any]], exact: bool
) -> None:
    """No valid event is dead-lettered; every invalid acknowledged event is, by the collector.

    ``exact``: no request was refused, so each invalid acknowledged event is in the DLQ exactly once
    (a refused request may have been stored in part before it was retried).
    """
    records = read_topic_to_end(settings, settings.topic_dlq, 1)
    valid_in_dlq, sources = [], Counter()
    for msg in records:
        sources[dict(msg.headers() or []).get("pulse.source", b"?").decode()] += 1
        try:
            validate_event(json.loads(msg.value()))
            valid_in_dlq.append(msg.value()[:120])
        except (EventContractError, ValueError):
            pass
    invalid_acked = sum(1 for e in acknowledged if not is_valid(e))
    run.check(
        "no DLQ record for a valid event",
        not valid_in_dlq,
        f"{len(records)} DLQ records, {len(valid_in_dlq)} valid"
        + (f", e.g. {valid_in_dlq[0]!r}" if valid_in_dlq else "")
        + f"; by source {dict(sources)}",
    )
    from_collector = sources.get("collector", 0)
    held = from_collector == invalid_acked if exact else from_collector >= invalid_acked
    run.check(
        "every invalid acknowledged event dead-lettered by the collector, none by the apps",
        held and set(sources) <= {"collector"},
        f"{from_collector} from the collector for {invalid_acked} invalid acknowledged events",
    )


def check_archive(
    run: FaultRun, settings: PulseSettings, acknowledged: list[dict[str, Any]], timeout: float = 90
) -> None:
    """The archive holds every acknowledged valid event once per Kafka record, after dedupe by coordinates."""
    wanted = Counter(e["event_id"] for e in acknowledged if is_valid(e))
    root = settings.archive_path
    began = time.monotonic()
    archived: Counter[str] = Counter()
    while True:
        if has_archive(root):
            archived = Counter(json.loads(e.raw)["event_id"] for e in read_valid_events(root))
        if archived == wanted or time.monotonic() - began > timeout:
            break
        time.sleep(0.5)
    missing = wanted - archived
    extra = archived - wanted
    raw_rows = _raw_valid_rows(root)
    run.check(
        "archive = every acknowledged valid event, once per Kafka record (deduped by coordinates)",
        not missing and not extra,
        f"{sum(archived.values())} archived records for {sum(wanted.values())} acknowledged; "
        f"{sum(missing.values())} missing, {sum(extra.values())} extra; "
        f"{raw_rows - sum(archived.values())} redelivered rows on disk removed by dedupe",
    )


def _raw_valid_rows(root: Any) -> int:
    import duckdb

    if not has_archive(root):
        return 0
    with duckdb.connect() as con:
        return int(
            con.execute(
                "SELECT count(*) FROM read_parquet(?, hive_partitioning = true) WHERE valid",
                [archive_glob(root)],
            ).fetchone()[0]
        )
