"""Keep the embedded broker fast for days: restart it empty once its partitions hold many batches.

Tansu 0.6 (memory storage) lists every record batch of a partition on each fetch and cannot
delete records, so it slows down with every batch it holds. When the collector has produced
``PULSE_EMBEDDED_BROKER_MAX_BATCHES`` requests it asks for maintenance, and `pulse up`:

1. has the consumer apps checkpoint at once and waits, intake still flowing, until the consumer
   groups that must see everything (profile app, archiver, ...) trail the end by under 0.5 s;
2. holds intake: every collector stops producing (a request that arrives waits in the collector,
   ``PULSE_BROKER_HOLD_WAIT_SECONDS`` at most) and acknowledges once every record it produced is
   acknowledged by the broker (``core.broker_hold``);
3. waits until those groups have committed every record: each event is applied and archived
   before it goes;
4. has the consumer apps close their Kafka clients, kills the broker and says so (the collectors
   and the profile app then make the producers they will use after it, ``streaming.next_producer``:
   a producer id assigned later is the new broker's), starts it empty on the same address and
   creates the same topics; then says so, and the consumer apps build their applications;
5. moves each partition's end to where it was with one offset-gap control batch
   (``orchestration.kafka_wire``), so Kafka coordinates never repeat (the archive deduplicates
   by them), and commits the required groups at those ends;
6. waits (``READY_SECONDS`` at most) until every collector's new producer holds an id of the new broker,
   then lets the collectors produce again and the consumer apps read.

Each phase's duration is logged and reported (``MaintenanceReport.phases``).
Records of a topic that no required group reads are dropped, as retention would, and other
consumer groups (a user's own) start over on the new broker. With
``PULSE_KAFKA_BROKERS`` set none of this runs. docs/architecture.md explains the design.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from assets.kafka_health import BrokerUnavailable, group_offsets
from core.broker_hold import READY_PREFIX, BrokerHold
from core.kafka_config import client_config
from core.settings import PulseSettings
from core.topics import TopicSpec, ensure_topics, topic_specs
from orchestration.kafka_wire import offset_gap_batch, produce_request, produce_response

logger = logging.getLogger(__name__)

#: Before intake is held, the consumers must catch up to a marker within this long (docs/architecture.md).
CAUGHT_UP_SECONDS = 0.5
#: How often the commits are read while waiting for the consumers to catch up (intake flowing) and
#: to drain (intake held: every round of it is a wait for every held request).
POLL_SECONDS = 0.05
DRAIN_POLL_SECONDS = 0.01
#: After the restart, how long to wait for the collectors' new producers to get their producer id
#: before intake is released anyway (they then get it with their first records, about 0.5 s later).
READY_SECONDS = 2.0

Partition = tuple[str, int]


class MaintenanceAborted(RuntimeError):
    """Maintenance gave up before touching the broker; intake was released and nothing changed."""


class MaintenanceFailed(RuntimeError):
    """The broker was restarted but its offsets or commits could not be restored."""


@dataclass(frozen=True)
class MaintenanceReport:
    """What one maintenance did."""

    generation: int
    held_seconds: float
    ends: dict[Partition, int]
    groups: dict[str, dict[Partition, int]]
    #: Seconds each phase took, in order (``PhaseClock``).
    phases: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        ends = ", ".join(f"{t}[{p}]@{end}" for (t, p), end in sorted(self.ends.items()) if end)
        phases = " ".join(f"{name} {seconds:.2f}" for name, seconds in self.phases.items())
        return (
            f"broker maintenance {self.generation}: restarted empty, intake held {self.held_seconds:.2f}s "
            f"(phases in s: {phases or 'none'}), offsets continue at {ends or 'zero'}"
        )


class PhaseClock:
    """How long each phase of a maintenance took, logged as it ends."""

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.started = self._last = self._held_since = time.monotonic()
        self.phases: dict[str, float] = {}

    def lap(self, phase: str) -> None:
        """End ``phase`` now."""
        now = time.monotonic()
        self.phases[phase] = now - self._last
        self._last = now
        logger.info(
            "maintenance %d: %s took %.3fs (%.3fs in all)",
            self.generation,
            phase,
            self.phases[phase],
            now - self.started,
        )

    def hold_starts(self) -> None:
        """Intake is held from now (what came before it was not a wait for anyone)."""
        self._held_since = time.monotonic()

    def held(self) -> float:
        """Seconds since intake was held."""
        return time.monotonic() - self._held_since


def required_readers(settings: PulseSettings, *, relay: bool) -> dict[str, list[str]]:
    """Topic -> the consumer groups that must have committed all of it before its records go."""
    readers = {
        settings.topic_events: [settings.consumer_group, settings.archiver_consumer_group],
        settings.topic_dlq: [settings.archiver_consumer_group],
    }
    if relay:
        readers[settings.topic_triggers] = [settings.relay_consumer_group]
    return readers


@dataclass
class BrokerMaintainer:
    """Runs maintenance of one embedded broker; ``restart`` replaces it with an empty one."""

    settings: PulseSettings
    address: str
    restart: Callable[[], None]
    hold: BrokerHold
    #: Around the restart: the consumer apps close their Kafka clients and build new ones after
    #: (librdkafka clients whose broker was replaced under them crashed or stalled in our tests).
    stop_consumers: Callable[[], None] = lambda: None
    start_consumers: Callable[[], None] = lambda: None
    #: Called while waiting for the consumers, e.g. to restart one that crashed meanwhile.
    while_waiting: Callable[[], None] = lambda: None
    collectors: int = 1
    readers: Mapping[str, Sequence[str]] = field(default_factory=dict)
    ack_timeout: float = 15.0
    drain_timeout: float = 60.0
    generation: int = 0
    _ends: PartitionEnds | None = field(default=None, init=False, repr=False)
    say: Callable[[str], None] = logger.info

    def due(self) -> bool:
        """True when a collector asked for maintenance."""
        return self.hold.requested()

    def run(self) -> MaintenanceReport:
        """Maintain the broker now; raise MaintenanceAborted (nothing changed) or MaintenanceFailed."""
        self.generation += 1
        clock = PhaseClock(self.generation)
        self.hold.begin_prepare(self.generation)  # consumer apps checkpoint at once from now
        try:
            specs = self._topic_specs()
            partitions = [(spec.name, p) for spec in specs for p in range(spec.partitions)]
            if self._ends is None:  # else: this broker's markers of a postponed attempt are known
                self._ends = PartitionEnds(partitions, lambda topic, p: mark_end(self.address, topic, p))
            ends = self._ends
            ends.partitions = partitions
            self._wait_caught_up(ends)
            clock.lap("catch-up")
            clock.hold_starts()
            self.hold.begin(self.generation)
            self._wait_for_collectors()
            clock.lap("hold-ack")
            groups = self._wait_drained(ends)
            clock.lap("drain")
        except BaseException:
            self.hold.release()
            raise
        try:
            self.stop_consumers()  # each has committed everything: nothing is lost even by a kill
            clock.lap("stop-consumers")
            self.restart()
            self._ends = None  # a new, empty broker
            clock.lap("restart")
            admin = AdminClient(client_config(self.settings, self.address))
            ensure_topics(admin, specs, self.settings.topic_replication_factor)
            self.hold.begin_restarted(self.generation)
            clock.lap("topics")
            for (topic, partition), end in sorted(ends.final().items()):
                if end > 0:
                    advance_partition_end(self.address, topic, partition, end)
            restore_all_commits(self.settings, self.address, groups)
            clock.lap("restore")
            self._wait_for_producers()
            clock.lap("producers")
        except (OSError, KafkaException, BrokerUnavailable, RuntimeError) as exc:
            raise MaintenanceFailed(f"the embedded broker was restarted but not restored: {exc}") from exc
        finally:
            self.hold.release()
            self.start_consumers()
        report = MaintenanceReport(self.generation, clock.held(), ends.final(), groups, clock.phases)
        self.say(report.summary())
        return report

    def _wait_for_collectors(self) -> None:
        deadline = time.monotonic() + self.ack_timeout
        while self.hold.acknowledgements(self.generation) < self.collectors:
            if time.monotonic() > deadline:
                raise MaintenanceAborted(
                    f"{self.hold.acknowledgements(self.generation)} of {self.collectors} collector(s) "
                    f"stopped producing within {self.ack_timeout:.0f}s"
                )
            time.sleep(0.02)

    def _wait_for_producers(self) -> None:
        """Until every collector's new producer holds its producer id (``READY_SECONDS`` at most:
        a producer without one still delivers, later)."""
        deadline = time.monotonic() + READY_SECONDS
        while self.hold.acknowledgements(self.generation, READY_PREFIX) < self.collectors:
            if time.monotonic() > deadline:
                logger.warning(
                    "maintenance %d: %d of %d collector(s) had a producer id after %.1fs; releasing anyway",
                    self.generation,
                    self.hold.acknowledgements(self.generation, READY_PREFIX),
                    self.collectors,
                    READY_SECONDS,
                )
                return
            time.sleep(0.01)

    def _topic_specs(self) -> list[TopicSpec]:
        """Every topic on the broker, Pulse's with their own configs, others with the same ones."""
        known = {spec.name: spec for spec in topic_specs(self.settings)}
        config = next(iter(known.values())).config
        metadata = AdminClient(client_config(self.settings, self.address)).list_topics(timeout=10)
        return [
            known.get(name) or TopicSpec(name, len(topic.partitions), config)
            for name, topic in sorted(metadata.topics.items())
            if not name.startswith("__")
        ]

    def _groups(self) -> list[str]:
        return sorted({g for names in self.readers.values() for g in names})

    def _wait_caught_up(self, ends: PartitionEnds) -> None:
        """Before holding intake: wait until the required groups trail the end by less than
        ``CAUGHT_UP_SECONDS`` (they catch up to a marker within that time), so the hold only waits
        for the last records. Intake flows meanwhile; raise MaintenanceAborted after ``drain_timeout``."""
        deadline = time.monotonic() + self.drain_timeout
        admin = AdminClient(client_config(self.settings, self.address))
        target, since = ends.mark(), time.monotonic()
        while True:
            commits = {g: group_offsets(admin, g, 10.0) for g in self._groups()}
            behind = lagging(target, commits, self.readers)
            if not behind:
                if time.monotonic() - since < CAUGHT_UP_SECONDS:
                    return
                target, since = ends.mark(), time.monotonic()  # caught up slowly: once more
                continue
            if time.monotonic() > deadline:
                raise MaintenanceAborted(
                    f"consumers did not catch up within {self.drain_timeout:.0f}s: {'; '.join(behind)}"
                )
            self.while_waiting()
            time.sleep(POLL_SECONDS)

    def _wait_drained(self, ends: PartitionEnds) -> dict[str, dict[Partition, int]]:
        """With intake held: wait until every required group committed every record; return the
        commits to restore after the restart (``ends.final()`` is where each partition continues)."""
        deadline = time.monotonic() + self.drain_timeout
        admin = AdminClient(client_config(self.settings, self.address))  # one for every round
        while True:
            records_end = ends.mark()  # a marker per partition and round (``mark_end``)
            commits = {g: group_offsets(admin, g, 10.0) for g in self._groups()}
            behind = lagging(records_end, commits, self.readers)
            if not behind:
                return resumed_commits(ends.final(), commits, self.readers)
            if time.monotonic() > deadline:
                raise MaintenanceAborted(
                    f"consumers did not catch up within {self.drain_timeout:.0f}s: {'; '.join(behind)}"
                )
            self.while_waiting()
            time.sleep(DRAIN_POLL_SECONDS)


class PartitionEnds:
    """Where each partition's records end, found with markers (``mark_end``) across rounds.

    Kept across the attempts on one broker: the markers of a postponed attempt stay in its
    partitions, and only a tracker that placed them knows no record came after them (a fresh one
    would wait for consumers to commit past markers they never see).
    """

    def __init__(self, partitions: Sequence[Partition], mark: Callable[[str, int], int]) -> None:
        self.partitions = list(partitions)
        self._mark = mark
        self.records_end: dict[Partition, int] = {}  # after the last record (markers aside)
        self.marker: dict[Partition, int] = {}  # the last marker's offset

    def mark(self) -> dict[Partition, int]:
        """Append one marker to every partition; return where the records end (markers aside)."""
        for tp in self.partitions:
            at = self._mark(*tp)
            if self.marker.get(tp, -2) + 1 != at:  # a record came after the last marker
                self.records_end[tp] = at
            self.marker[tp] = at
        return {tp: self.records_end[tp] for tp in self.partitions}

    def final(self) -> dict[Partition, int]:
        """Each partition's end after the last marker: where offsets continue after the restart."""
        return {tp: self.marker[tp] + 1 for tp in self.partitions if tp in self.marker}


def lagging(
    ends: Mapping[Partition, int],
    commits: Mapping[str, Mapping[Partition, int]],
    readers: Mapping[str, Sequence[str]],
) -> list[str]:
    """Why the required readers are not done yet (empty when every one of them read everything)."""
    behind = []
    for (topic, partition), end in sorted(ends.items()):
        for group in readers.get(topic, ()):
            committed = commits.get(group, {}).get((topic, partition), 0)
            if committed < end:
                behind.append(f"{group} at {committed} of {end} on {topic}[{partition}]")
    return behind


def resumed_commits(
    ends: Mapping[Partition, int],
    commits: Mapping[str, Mapping[Partition, int]],
    readers: Mapping[str, Sequence[str]],
) -> dict[str, dict[Partition, int]]:
    """The offsets to commit after the restart: required groups at the new ends (they read every
    record, and what follows is markers and the gap); other offsets in ``commits`` as they were."""
    resumed = {group: dict(offsets) for group, offsets in commits.items()}
    for (topic, partition), end in ends.items():
        for group in readers.get(topic, ()):
            resumed.setdefault(group, {})[(topic, partition)] = end
    return resumed


def restore_all_commits(
    settings: PulseSettings, address: str, groups: Mapping[str, Mapping[Partition, int]]
) -> None:
    """Commit each group's offsets as they were (an admin request per group, all in flight at once:
    a few milliseconds, where a consumer per group took 60 ms to start, commit and close)."""
    admin = AdminClient(client_config(settings, address))
    futures = [
        admin.alter_consumer_group_offsets(
            [
                ConsumerGroupTopicPartitions(
                    group, [TopicPartition(t, p, offset) for (t, p), offset in sorted(offsets.items())]
                )
            ]
        )
        for group, offsets in sorted(groups.items())
        if offsets
    ]
    for requested in futures:
        for future in requested.values():
            future.result(timeout=10)


def mark_end(address: str, topic: str, partition: int) -> int:
    """Append a one-offset marker (a control record no consumer sees); return its offset.

    Every record before it was there first, so its offset is the partition's end until then.
    Exact where reading the end is not: Tansu's ListOffsets answers the start of the last batch
    + 1, and its fetches return only batches that start at or after the offset asked for.
    Consumers commit up to the last record they processed, so a group that read everything has
    committed at least this offset.
    """
    return _produce_gap(address, topic, partition, 1)


def advance_partition_end(address: str, topic: str, partition: int, end: int) -> None:
    """Move an empty partition's end to ``end`` with one offset-gap control batch."""
    base = _produce_gap(address, topic, partition, end)
    if base != 0:
        raise MaintenanceFailed(f"{topic}[{partition}] was not empty: the offset gap landed at {base}")


def _produce_gap(address: str, topic: str, partition: int, count: int, timeout: float = 10.0) -> int:
    """Produce an offset gap of ``count``; return the offset it starts at."""
    host, port = address.rsplit(":", 1)
    correlation_id = 1
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(produce_request(topic, partition, offset_gap_batch(count), correlation_id))
        length = int.from_bytes(_read_exactly(sock, 4), "big")
        error, base = produce_response(_read_exactly(sock, length), correlation_id)
    if error:
        raise MaintenanceFailed(f"{topic}[{partition}]: the broker refused the offset gap (error {error})")
    return base


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    chunks, remaining = [], size
    while remaining:
        chunk = sock.recv(remaining)
        if not chunk:
            raise MaintenanceFailed("the broker closed the connection mid-answer")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
