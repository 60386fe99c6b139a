"""`pulse dlq replay`: re-validate archived dead letters, optionally fixed, and republish them once.

Each dead letter is sent at most once: its DLQ coordinates go to the replay ledger
(assets/dead_letter_ledger.py) as ``pending`` before it is produced and ``done`` once the broker
acknowledged it, so a second run republishes nothing. Records still invalid after the fix are
counted by reason, not sent and not recorded: a better fix may replay them later.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from assets.dead_letter_fixes import Fix, reason_kind, revalidate
from assets.dead_letter_ledger import DONE, PENDING, RELEASED, Coordinates, ReplayLedger, ledger_path
from assets.dead_letters import DeadLetter, read_dead_letters
from assets.forgotten import read_suppressions
from core import service_registry
from core.forgetting import Suppressions, is_forgotten
from core.kafka_config import durable_producer_config
from core.redis_client import redis_from_url
from core.settings import PulseSettings
from core.time_format import iso_millis, now_iso

logger = logging.getLogger(__name__)

BATCH = 500
INVALID_SAMPLES = 5


class DeadLetterReplayIncomplete(RuntimeError):
    """The broker did not acknowledge every republished event; the rest stays replayable or in doubt."""


@dataclass
class DeadLetterReplaySummary:
    """What a replay did with each dead letter it considered."""

    considered: int = 0
    republished: int = 0
    already_replayed: int = 0
    in_doubt: int = 0
    declined: int = 0
    skipped_forgotten: int = 0
    still_invalid: Counter[str] = field(default_factory=Counter)
    invalid_samples: list[tuple[Coordinates, str]] = field(default_factory=list)
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "considered": self.considered,
            "republished": self.republished,
            "already_replayed": self.already_replayed,
            "in_doubt": self.in_doubt,
            "declined_by_fix": self.declined,
            "skipped_forgotten": self.skipped_forgotten,
            "still_invalid": sum(self.still_invalid.values()),
            "still_invalid_by_reason": dict(self.still_invalid.most_common()),
            "still_invalid_samples": [
                {"topic": c.topic, "partition": c.partition, "offset": c.offset, "error": e}
                for c, e in self.invalid_samples
            ],
            "dry_run": self.dry_run,
        }


@dataclass(frozen=True)
class _Ready:
    coordinates: Coordinates
    value: bytes
    key: bytes


def replay_dead_letters(
    settings: PulseSettings,
    *,
    fix: Fix | None = None,
    reason: str | None = None,
    source: str | None = None,
    dry_run: bool = False,
    retry_in_doubt: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> DeadLetterReplaySummary:
    """Republish the archived dead letters that are valid (after ``fix``) to the events topic."""
    letters = read_dead_letters(settings.archive_path, reason=reason, source=source)
    forgotten = read_suppressions(settings, redis_from_url(service_registry.redis_url(settings)))
    summary = DeadLetterReplaySummary(dry_run=dry_run)
    producer = None if dry_run else _producer(settings)
    with ReplayLedger.locked(ledger_path(settings.archive_path)) as ledger:
        batch: list[_Ready] = []
        for index, letter in enumerate(letters, 1):
            ready = _triage(letter, ledger, fix, forgotten, retry_in_doubt, summary)
            if ready is not None:
                batch.append(ready)
            if len(batch) >= BATCH or index == len(letters):
                _send(producer, settings.topic_events, batch, ledger, summary)
                batch = []
                if progress:
                    progress(index, len(letters))
    logger.info("dead-letter replay: %s", summary.as_dict())
    return summary


def _triage(
    letter: DeadLetter,
    ledger: ReplayLedger,
    fix: Fix | None,
    forgotten: Suppressions,
    retry_in_doubt: bool,
    summary: DeadLetterReplaySummary,
) -> _Ready | None:
    """The record to republish for a dead letter, or None with the reason counted in ``summary``."""
    summary.considered += 1
    state = ledger.state(letter.coordinates)
    if state == DONE:
        summary.already_replayed += 1
        return None
    if state == PENDING and not retry_in_doubt:
        summary.in_doubt += 1
        return None
    received_at = iso_millis(letter.received_at) if letter.received_at else now_iso()
    result = revalidate(letter.raw, fix, received_at)
    if result.declined:
        summary.declined += 1
        return None
    if result.error is not None or result.value is None or result.key is None:
        summary.still_invalid[reason_kind(result.error)] += 1
        if len(summary.invalid_samples) < INVALID_SAMPLES:
            summary.invalid_samples.append((letter.coordinates, result.error or "invalid"))
        return None
    if is_forgotten(result.key.decode(), result.event_time_ms, forgotten):
        summary.skipped_forgotten += 1
        return None
    return _Ready(letter.coordinates, result.value, result.key)


def _producer(settings: PulseSettings) -> Producer:
    return Producer(durable_producer_config(settings, service_registry.kafka_brokers(settings)))


def _send(
    producer: Producer | None,
    topic: str,
    batch: list[_Ready],
    ledger: ReplayLedger,
    summary: DeadLetterReplaySummary,
) -> None:
    """Produce a batch, ledger first; record what the broker acknowledged and what it refused."""
    if not batch:
        return
    if producer is None:  # dry run
        summary.republished += len(batch)
        return
    ledger.record(PENDING, (ready.coordinates for ready in batch))
    acked: list[Coordinates] = []
    refused: list[tuple[Coordinates, str]] = []

    def on_delivery(coordinates: Coordinates, err: Any, _msg: Any) -> None:
        if err is None:
            acked.append(coordinates)
        else:
            refused.append((coordinates, str(err)))

    for ready in batch:
        while True:
            try:
                producer.produce(
                    topic,
                    value=ready.value,
                    key=ready.key,
                    on_delivery=partial(on_delivery, ready.coordinates),
                )
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(60)
    ledger.record(DONE, acked)
    ledger.record(RELEASED, (c for c, _ in refused))
    summary.republished += len(acked)
    if remaining or refused:
        raise DeadLetterReplayIncomplete(
            f"the broker refused {len(refused)} and did not answer for {remaining} of {len(batch)} events "
            f"({refused[0][1] if refused else 'timeout'}); the refused ones stay replayable, the "
            "unanswered ones are in doubt (--retry-in-doubt sends them again; their event_id dedupes "
            "them within the dedupe window). Is the broker up? (`pulse doctor` checks)"
        )


def ledger_file(settings: PulseSettings) -> Path:
    """The replay ledger of this data directory's archive."""
    return ledger_path(settings.archive_path)
