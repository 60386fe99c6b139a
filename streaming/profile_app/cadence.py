"""Checkpoints that adapt to the backlog: frequent when the stream is quiet, long when events wait.

A checkpoint confirms every Redis write and commits offsets synchronously, so its cost is
fixed: at ``PULSE_COMMIT_INTERVAL_SECONDS`` (10 ms) a quiet stream's events reach profiles
within milliseconds, but a backlog pays that fixed cost a hundred times a second. After each
checkpoint the profile app compares the events waiting in its partitions (high watermark minus
position, both known to the consumer without a request) with the events the checkpoint took:
while more wait, the next checkpoint is twice as long (up to ``MAX_INTERVAL_SECONDS``); once
the backlog is gone, it is back to the configured interval. Nothing to tune: a latency-bound
stream never has a backlog, a throughput-bound one always has.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from confluent_kafka import TopicPartition

logger = logging.getLogger(__name__)

#: The longest a checkpoint gets under a backlog (the configured interval when that is longer).
MAX_INTERVAL_SECONDS = 0.5
#: A backlog this small is no backlog: a hiccup of the broker (a slow fetch) leaves a few hundred
#: events waiting at live rates, and stretching checkpoints then would only add latency.
MIN_BACKLOG = 1000


@dataclass(frozen=True)
class Cadence:
    """When a checkpoint ends: after ``interval_seconds``, or ``every`` events, whichever first."""

    interval_seconds: float
    every: int


def next_cadence(current: Cadence, base: Cadence, backlog: int, processed: int) -> Cadence:
    """The cadence of the next checkpoint, given the events waiting and those the last one took (pure)."""
    if backlog <= max(processed, MIN_BACKLOG):
        return base
    longest = max(base.interval_seconds, MAX_INTERVAL_SECONDS)
    interval = min(current.interval_seconds * 2, longest)
    factor = interval / base.interval_seconds if base.interval_seconds > 0 else 1.0
    every = round(base.every * factor) if base.every > 0 else 0
    return Cadence(interval, every)


def backlog_of(consumer: Any) -> int:
    """Events waiting in the consumer's assigned partitions, from its cached watermarks (no request)."""
    assigned = consumer.assignment()
    if not assigned:
        return 0
    waiting = 0
    for position in consumer.position(assigned):
        if position.offset < 0:  # nothing consumed yet
            continue
        _, high = consumer.get_watermark_offsets(
            TopicPartition(position.topic, position.partition), cached=True
        )
        if high > position.offset:
            waiting += high - position.offset
    return waiting


class AdaptiveCheckpoints:
    """Sets a Quix application's next checkpoint cadence after each checkpoint of its sink.

    Quix reads ``commit_interval``/``commit_every`` from its processing context each time it
    starts a checkpoint and has no public setter for them, so this writes them there; the
    Quix version is pinned in the lock file.
    """

    def __init__(self, app: Any, interval_seconds: float, every: int) -> None:
        self._app = app
        self._base = self._current = Cadence(interval_seconds, every)

    @property
    def current(self) -> Cadence:
        return self._current

    def after_checkpoint(self, processed: int) -> None:
        """Called by the sink at the end of each checkpoint's flush with the events it took."""
        consumer = getattr(self._app, "_consumer", None)
        context = getattr(self._app, "_processing_context", None)
        if consumer is None or context is None:
            return
        try:
            backlog = backlog_of(consumer)
        except Exception as exc:  # a consumer being closed or rebalanced: keep the cadence
            logger.debug("backlog unknown: %s", exc)
            return
        cadence = next_cadence(self._current, self._base, backlog, processed)
        if cadence != self._current:
            logger.debug("checkpoint cadence %s (backlog %d, last %d events)", cadence, backlog, processed)
            self._current = cadence
            context.commit_interval = cadence.interval_seconds
            context.commit_every = cadence.every
