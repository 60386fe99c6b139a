"""Liveness and readiness of a consumer app, from librdkafka's statistics, in a small status file.

librdkafka emits its statistics from inside ``poll()``, on the thread that runs the Quix loop. So
a fresh status file proves that the loop still polls (liveness, also when no events arrive), and
the consumer-group state it records says whether the app has joined its group (readiness).
`pulse probe APP` reads the file, for Kubernetes exec probes and Compose healthchecks.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.kafka_config import consumer_tuning
from core.settings import PulseSettings

logger = logging.getLogger(__name__)

#: How often librdkafka emits statistics, and so how often the status file is rewritten.
STATS_INTERVAL_MS = 5000


def status_path(data_dir: Path, app: str, host: str | None = None) -> Path:
    """Where ``app`` on ``host`` (this one by default) keeps its status file.

    The host name keeps containers that share a data volume (Compose replicas) apart; a probe
    runs in the app's container, so it finds the same name.
    """
    return data_dir / "run" / f"{app}-{host or socket.gethostname()}.status.json"


@dataclass(frozen=True)
class AppStatus:
    """What one statistics callback saw."""

    at: float
    pid: int
    group_state: str
    join_state: str
    assigned: int
    #: Partitions it reads that it assigned itself, without a group join (``pulse up``'s apps,
    #: streaming/static_assignment.py); 0 for a group member.
    assigned_without_group: int = 0

    @property
    def joined(self) -> bool:
        """Member of a settled group (an idle member with no partitions counts: it is ready), or
        reading the partitions it assigned itself."""
        steady_member = self.group_state == "up" and self.join_state == "steady"
        return steady_member or (self.join_state == "init" and self.assigned_without_group > 0)


def status_from_stats(stats: dict[str, Any], now: float, pid: int) -> AppStatus:
    """The status in a librdkafka statistics document (its ``cgrp`` section)."""
    group = stats.get("cgrp") or {}
    join_state = str(group.get("join_state", "none"))
    reading = 0
    if join_state == "init":  # no group join: count the partitions it fetches (assigned itself)
        reading = sum(
            1
            for topic in (stats.get("topics") or {}).values()
            for partition in (topic.get("partitions") or {}).values()
            if partition.get("desired") and partition.get("fetch_state") == "active"
        )
    return AppStatus(
        at=now,
        pid=pid,
        group_state=str(group.get("state", "none")),
        join_state=join_state,
        assigned=int(group.get("assignment_size", 0)) or reading,
        assigned_without_group=reading,
    )


class StatusWriter:
    """A ``stats_cb`` for the consumer: rewrites the status file atomically on every call."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def __call__(self, stats_json: str) -> None:
        try:
            status = status_from_stats(json.loads(stats_json), time.time(), os.getpid())
            self._path.parent.mkdir(parents=True, exist_ok=True)
            partial = self._path.with_suffix(".tmp")
            partial.write_text(json.dumps(asdict(status)))
            partial.replace(self._path)
        except (OSError, ValueError) as exc:  # a probe failing is better than the app failing
            logger.warning("could not write the status file %s: %s", self._path, exc)


def read_status(path: Path) -> AppStatus | None:
    """The last status written to ``path``, or None when there is none (yet) or it is unreadable."""
    try:
        return AppStatus(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def judge(status: AppStatus | None, now: float, max_age: float, ready: bool) -> tuple[bool, str]:
    """(healthy, why) for a liveness probe, or a readiness probe when ``ready``."""
    if status is None:
        return (
            False,
            "no status yet: the app has not polled Kafka since it started "
            "(or runs on another data directory)",
        )
    age = now - status.at
    if age > max_age:
        return (
            False,
            f"last poll {age:.0f}s ago (limit {max_age:.0f}s): "
            "the processing loop is stuck or the app has stopped",
        )
    seen = (
        f"polled {age:.0f}s ago; group {status.group_state}/{status.join_state}, "
        f"{status.assigned} partition(s), pid {status.pid}"
    )
    if ready and not status.joined:
        return False, f"not ready, still joining its consumer group: {seen}"
    if status.assigned_without_group:
        seen += " (assigned without a group join)"
    return True, seen


def app_consumer_config(settings: PulseSettings, app: str) -> dict[str, Any]:
    """``consumer_tuning`` plus the statistics callback that writes the status file `pulse probe APP`
    reads."""
    return {
        "statistics.interval.ms": STATS_INTERVAL_MS,
        **consumer_tuning(settings, app),
        "stats_cb": StatusWriter(status_path(settings.data_path, app)),
    }
