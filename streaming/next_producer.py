"""A producer for after a broker maintenance, made while the broker restarts: the collector's, and
the profile app's for its triggers (``BrokerHoldFollower.producer``).

The restarted broker knows no producer id of the old one, so intake resumes with a new idempotent
producer, and it can deliver only once it holds a producer id of the new broker. librdkafka asks
for that id from a timer only: 500 ms after the client is made, then every 500 ms, and only when a
broker connection is up at that tick (a broker coming up does not trigger it). A producer made once
the new broker is up therefore waits 0.5 s, longer than the rest of the hold.

So each of them makes *candidates* ``STAGGER_SECONDS`` apart, whose ticks fall as far apart, and
the first candidate whose id was assigned after the old broker went (``BrokerHold.down_since``,
written before the new broker starts) is the producer used after the release: its id came from
the new broker. The first ``EARLY_CANDIDATES`` are made once intake is held. Their first tick
falls 0.5 s later, when the drain, the restart and the new broker's start usually took less:
their ids come from the new broker at once (one that ticks while the old broker still lives gets
its id there and is dropped). The rest, up to ``MAX_CANDIDATES``, are made once the old broker
is down. None is made while a maintenance is only being prepared: a catch-up that lasted a
minute (consumers lagging on a busy machine) once made thousands of them, whose threads and ids
starved the platform and fenced the collector's live producer on Tansu. When the id was
assigned is read from the candidate's statistics: ``ts`` (librdkafka's monotonic clock, the one
``time.monotonic()`` reads) minus ``idemp_stateage``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Producer

logger = logging.getLogger(__name__)

#: A new candidate this often while no candidate holds an id of the new broker.
STAGGER_SECONDS = 0.05
#: At most this many candidates per maintenance (one second of them); then the release makes a
#: fresh producer.
MAX_CANDIDATES = 20
#: Of those, at most this many made while intake is held and the old broker still lives.
EARLY_CANDIDATES = 4
#: Statistics interval of a candidate: how soon its producer id is seen.
STATS_INTERVAL_MS = 20
#: A candidate reconnects this soon after the old broker goes (librdkafka's default is 100 ms, growing).
RECONNECT_BACKOFF_MS = 10
RECONNECT_BACKOFF_MAX_MS = 50


def producer_id_assigned_at(stats_json: str) -> float | None:
    """When (monotonic seconds) the producer of these statistics got its producer id, or None."""
    try:
        stats = json.loads(stats_json)
        eos = stats.get("eos") or {}
        if eos.get("idemp_state") != "Assigned":
            return None
        return stats["ts"] / 1e6 - eos["idemp_stateage"] / 1e3
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


class _Candidate:
    """One producer made ahead, and when it got its producer id (set from its statistics).

    The statistics callback closes over a list, not over the candidate: a callback that held the
    candidate (a bound method) would make a reference cycle through the producer, and an unused
    candidate would then live on, connected and queueing its statistics unread, until a full
    garbage collection; in an app frozen after its rebuild (``app_runner.frozen_after``) that is
    the next maintenance.
    """

    __slots__ = ("producer", "_assigned")

    def __init__(self, config: dict[str, Any], make: Callable[[dict[str, Any]], Producer]) -> None:
        assigned: list[float] = []
        self._assigned = assigned

        def on_stats(stats_json: str) -> None:
            if not assigned:
                at = producer_id_assigned_at(stats_json)
                if at is not None:
                    assigned.append(at)

        self.producer = make(
            {
                **config,
                "statistics.interval.ms": STATS_INTERVAL_MS,
                "stats_cb": on_stats,
                "reconnect.backoff.ms": RECONNECT_BACKOFF_MS,
                "reconnect.backoff.max.ms": RECONNECT_BACKOFF_MAX_MS,
            }
        )

    @property
    def assigned_at(self) -> float | None:
        """When (monotonic seconds) it got its producer id, or None."""
        return self._assigned[0] if self._assigned else None


def close_unused(producer: Producer) -> None:
    """Let a producer that never produced go, off the caller's thread (destroying one can block)."""
    threading.Thread(target=producer.flush, args=(0,), name="kafka-unused-producer", daemon=True).start()


class NextProducer:
    """Candidates for the producer used after one maintenance (driven from one thread)."""

    def __init__(
        self,
        config: dict[str, Any],
        make: Callable[[dict[str, Any]], Producer] = Producer,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config, self._make, self._clock = config, make, clock
        self._candidates: list[_Candidate] = []
        self._made_at = float("-inf")
        self._dropped = 0
        self._made = 0
        self._down_since: float | None = None
        self.chosen: Producer | None = None

    def step(self, down_since: float | None, held: bool = False) -> Producer | None:
        """Serve the candidates' statistics, drop any with an id of the old broker, make the next one
        when due (``EARLY_CANDIDATES`` once intake is held, the rest once the old broker is down);
        return the chosen producer once a candidate holds an id of the new broker.
        ``down_since``: when the old broker went (None before; remembered once given); ``held``:
        intake is held for this maintenance."""
        if self.chosen is not None:
            return self.chosen
        if down_since is not None:
            self._down_since = down_since
        down_since = self._down_since  # still known once the marker is gone with the release
        for candidate in list(self._candidates):
            candidate.producer.poll(0)  # serves its statistics callback
            assigned_at = candidate.assigned_at
            if assigned_at is None:
                continue
            self._candidates.remove(candidate)
            if down_since is not None and assigned_at > down_since:
                self.chosen = candidate.producer
                logger.info(
                    "new producer holds its producer id (%d candidate(s) made, %d with an id of the "
                    "old broker)",
                    len(self._candidates) + self._dropped + 1,
                    self._dropped,
                )
                self._close_candidates()
                return self.chosen
            self._dropped += 1
            close_unused(candidate.producer)
        now = self._clock()
        allowed = MAX_CANDIDATES if down_since is not None else EARLY_CANDIDATES if held else 0
        if self._made < allowed and now >= self._made_at + STAGGER_SECONDS:
            self._candidates.append(_Candidate(self._config, self._make))
            self._made_at, self._made = now, self._made + 1
        return None

    def take(self) -> Producer | None:
        """At the release: the chosen producer, or None when no candidate had an id of the new
        broker (the caller makes a fresh producer); every other candidate is closed."""
        self._close_candidates()
        chosen, self.chosen = self.chosen, None
        return chosen

    def _close_candidates(self) -> None:
        for candidate in self._candidates:
            close_unused(candidate.producer)
        self._candidates.clear()
