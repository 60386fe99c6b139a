"""Consumer lag, profile freshness and dead-letter rate, measured on the broker (I/O).

End offsets come from the high watermark of a Fetch response, not from ListOffsets: Tansu's
ListOffsets answer is wrong for multi-record batches (it stops at the start of the last
batch; and its offsets-for-times ignores the timestamp), while the watermark it returns
with fetched records is right. So each probe assigns a partition at a start offset, polls
until the first record or end-of-partition, and reads librdkafka's cached watermark from
that fetch. The same code gives the same answers on Kafka and Redpanda.

Lag is measured against committed offsets. Both Pulse consumers commit only after their
output is durable (Redis writes, Parquet files), so "the oldest record after the committed
offset" is the oldest event not yet in the profiles (or the archive): its age is how stale
they are. A caught-up group has no such record and a staleness of zero, however quiet the
traffic.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from core.kafka_config import client_config
from core.settings import PulseSettings

PROBE_GROUP = "pulse-health-probe"  # never commits, never subscribes: it only assigns partitions


class BrokerUnavailable(RuntimeError):
    """The broker did not answer the health probe in time."""


@dataclass(frozen=True)
class PartitionProbe:
    partition: int
    start: int  # first offset actually available from where the probe started
    end: int  # high watermark from the fetch response
    first_timestamp_ms: int | None  # timestamp of the record at ``start``; None when start == end


def _probe(
    settings: PulseSettings, brokers: str, topic: str, starts: dict[int, int] | None, timeout: float
) -> dict[int, PartitionProbe]:
    """One PartitionProbe per partition of ``topic``, starting at ``starts`` (default: the beginning)."""
    consumer = Consumer(
        {
            **client_config(settings, brokers),
            "group.id": PROBE_GROUP,
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 10,
            # one record is enough; larger records are still returned whole
            "max.partition.fetch.bytes": 4096,
        }
    )
    try:
        try:
            metadata = consumer.list_topics(topic, timeout=timeout)
        except KafkaException as exc:
            raise BrokerUnavailable(f"no metadata for {topic} from {brokers}: {exc}") from None
        topic_meta = metadata.topics.get(topic)
        if topic_meta is None or topic_meta.error is not None or not topic_meta.partitions:
            raise BrokerUnavailable(
                f"topic {topic} does not exist on {brokers}: "
                f"{topic_meta.error if topic_meta else 'unknown topic'}"
            )
        partitions = sorted(topic_meta.partitions)
        begin = {p: (starts or {}).get(p, OFFSET_BEGINNING) for p in partitions}
        consumer.assign(
            [TopicPartition(topic, p, begin[p] if begin[p] >= 0 else OFFSET_BEGINNING) for p in partitions]
        )
        first: dict[int, tuple[int, int | None]] = {}
        deadline = time.monotonic() + timeout
        while len(first) < len(partitions):
            if time.monotonic() > deadline:
                raise BrokerUnavailable(
                    f"{topic}: no fetch answer for partition(s) {sorted(set(partitions) - set(first))} "
                    f"within {timeout}s"
                )
            message = consumer.poll(0.2)
            if message is None or message.partition() in first:
                continue
            if message.error():
                if message.error().code() != KafkaError._PARTITION_EOF:  # EOF: nothing after ``start``
                    raise BrokerUnavailable(f"{topic}[{message.partition()}]: {message.error()}")
                first[message.partition()] = (message.offset(), None)
            else:
                stamp = message.timestamp()[1]
                first[message.partition()] = (message.offset(), stamp if stamp >= 0 else None)
        probes = {}
        for p in partitions:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), cached=True)
            offset, stamp = first[p]
            probes[p] = PartitionProbe(p, offset, max(high, offset), stamp)
        return probes
    finally:
        consumer.close()


def end_offsets(settings: PulseSettings, brokers: str, topic: str, timeout: float) -> dict[int, int]:
    """The end offset (high watermark, read from a fetch) of each partition of ``topic``."""
    return {p: probe.end for p, probe in _probe(settings, brokers, topic, None, timeout).items()}


class ArchiverBehind(RuntimeError):
    """The archiver has not archived up to the offsets asked for: it is behind, or not running."""


def wait_for_archiver(
    settings: PulseSettings, brokers: str, upto: dict[int, int] | None = None, timeout: float = 120.0
) -> None:
    """Wait until the archiver has committed ``upto`` (partition -> offset) on the events topic.

    By default ``upto`` is the topic's end now (``end_offsets``): every record it holds is then
    in the archive. Raises ArchiverBehind when ``timeout`` seconds pass first.
    """
    topic, group = settings.topic_events, settings.archiver_consumer_group
    targets = end_offsets(settings, brokers, topic, 10.0) if upto is None else upto
    deadline = time.monotonic() + timeout
    while True:
        committed = committed_offsets(settings, brokers, group, topic, 10.0)
        behind = sorted(p for p, end in targets.items() if end > 0 and committed.get(p, -1) < end)
        if not behind:
            return
        if time.monotonic() > deadline:
            raise ArchiverBehind(
                f"the archiver has not archived {topic} up to offsets {targets} (partitions {behind} "
                "behind); is it running? (`pulse doctor` checks)"
            )
        time.sleep(0.5)


@dataclass(frozen=True)
class GroupLag:
    """How far one consumer group is behind on one topic."""

    group: str
    topic: str
    messages: int
    oldest_unconsumed_age_s: float  # 0 when caught up
    has_commits: bool
    partitions: dict[int, int] = field(default_factory=dict)  # partition -> messages behind


def group_offsets(admin: AdminClient, group: str, timeout: float) -> dict[tuple[str, int], int]:
    """Every committed offset of ``group``: (topic, partition) -> offset."""
    try:
        result = admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group)], request_timeout=timeout
        )[group].result(timeout=timeout)
    except KafkaException as exc:
        raise BrokerUnavailable(f"committed offsets of {group}: {exc}") from None
    return {(tp.topic, tp.partition): tp.offset for tp in result.topic_partitions or [] if tp.offset >= 0}


def committed_offsets(
    settings: PulseSettings, brokers: str, group: str, topic: str, timeout: float
) -> dict[int, int]:
    """Committed offset per partition of ``topic`` (absent where the group never committed)."""
    offsets = group_offsets(AdminClient(client_config(settings, brokers)), group, timeout)
    return {partition: offset for (name, partition), offset in offsets.items() if name == topic}


def group_lag(
    settings: PulseSettings, brokers: str, group: str, topic: str, now: float, timeout: float = 10.0
) -> GroupLag:
    """Lag of ``group`` on ``topic``: records after its committed offsets and the age of the oldest of
    them."""
    committed = committed_offsets(settings, brokers, group, topic, timeout)
    probes = _probe(settings, brokers, topic, committed, timeout)
    behind = {p: max(0, probe.end - probe.start) for p, probe in probes.items()}
    oldest = [probe.first_timestamp_ms for probe in probes.values() if probe.first_timestamp_ms is not None]
    age = max(0.0, now - min(oldest) / 1000) if oldest else 0.0
    return GroupLag(group, topic, sum(behind.values()), age, bool(committed), behind)


@dataclass(frozen=True)
class OffsetSnapshot:
    """Record counts of the events and dead-letter topics at one moment (their offsets), for rates."""

    at: float
    events_start: int
    events_end: int
    dlq_start: int
    dlq_end: int
    oldest_ms: int | None  # timestamp of the oldest retained record of either topic

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, recorded: str | dict | None) -> OffsetSnapshot | None:
        """The snapshot in a sensor cursor (text) or asset metadata (a dict); None when absent or
        unreadable."""
        if not recorded:
            return None
        try:
            return cls(**(json.loads(recorded) if isinstance(recorded, str) else recorded))
        except (ValueError, TypeError):
            return None


def offset_snapshot(
    settings: PulseSettings, brokers: str, now: float, timeout: float = 10.0
) -> OffsetSnapshot:
    events = _probe(settings, brokers, settings.topic_events, None, timeout)
    dlq = _probe(settings, brokers, settings.topic_dlq, None, timeout)
    stamps = [
        p.first_timestamp_ms for p in (*events.values(), *dlq.values()) if p.first_timestamp_ms is not None
    ]
    return OffsetSnapshot(
        at=now,
        events_start=sum(p.start for p in events.values()),
        events_end=sum(p.end for p in events.values()),
        dlq_start=sum(p.start for p in dlq.values()),
        dlq_end=sum(p.end for p in dlq.values()),
        oldest_ms=min(stamps) if stamps else None,
    )


@dataclass(frozen=True)
class DlqRate:
    """Dead letters against events over a window."""

    basis: str  # "since previous measurement" or "retained topics"
    window_s: float
    events: int
    dead_letters: int

    @property
    def per_minute(self) -> float:
        return self.dead_letters * 60 / self.window_s if self.window_s > 0 else 0.0

    @property
    def events_per_minute(self) -> float:
        return self.events * 60 / self.window_s if self.window_s > 0 else 0.0

    @property
    def ratio(self) -> float:
        """Dead letters per event written to the events topic (collector rejects never reach that topic)."""
        return self.dead_letters / self.events if self.events else float(self.dead_letters > 0)


def dlq_rate(previous: OffsetSnapshot | None, current: OffsetSnapshot) -> DlqRate:
    """Rate since ``previous``; over the retained topics when there is none or offsets went back (broker
    reset)."""
    grew = (
        previous is not None
        and previous.events_end <= current.events_end
        and previous.dlq_end <= current.dlq_end
    )
    if previous is not None and grew and previous.at < current.at:
        events, dead_letters = current.events_end - previous.events_end, current.dlq_end - previous.dlq_end
        return DlqRate("since previous measurement", current.at - previous.at, events, dead_letters)
    window = current.at - current.oldest_ms / 1000 if current.oldest_ms is not None else 0.0
    return DlqRate(
        "retained topics",
        max(window, 0.0),
        current.events_end - current.events_start,
        current.dlq_end - current.dlq_start,
    )


@dataclass(frozen=True)
class Limits:
    """When stream health counts as a problem."""

    profile_staleness_s: float = 60.0
    consumer_lag_s: float = 300.0
    dlq_ratio: float = 0.05
    dlq_minimum: int = 10  # fewer dead letters than this in a window never count as a problem


@dataclass(frozen=True)
class StreamHealth:
    profile_app: GroupLag
    archiver: GroupLag
    dlq: DlqRate
    snapshot: OffsetSnapshot

    def problems(self, limits: Limits = Limits()) -> list[str]:
        """Names of the failing measures (the asset checks of the same names fail too)."""
        found = []
        if self.profile_app.oldest_unconsumed_age_s > limits.profile_staleness_s:
            found.append("profiles_fresh")
        if any(g.oldest_unconsumed_age_s > limits.consumer_lag_s for g in (self.profile_app, self.archiver)):
            found.append("consumer_lag")
        if self.dlq.dead_letters >= limits.dlq_minimum and self.dlq.ratio > limits.dlq_ratio:
            found.append("dlq_rate")
        return found

    def summary(self) -> str:
        return (
            f"profile app {self.profile_app.messages} behind "
            f"({self.profile_app.oldest_unconsumed_age_s:.0f}s), "
            f"archiver {self.archiver.messages} behind ({self.archiver.oldest_unconsumed_age_s:.0f}s), "
            f"{self.dlq.dead_letters} dead letters / {self.dlq.events} events ({self.dlq.basis})"
        )


def measure_stream_health(
    settings: PulseSettings,
    brokers: str,
    previous: OffsetSnapshot | None,
    now: float | None = None,
    timeout: float = 10.0,
) -> StreamHealth:
    """Lag of the profile app and the archiver on the events topic, and the dead-letter rate."""
    now = time.time() if now is None else now
    snapshot = offset_snapshot(settings, brokers, now, timeout)
    return StreamHealth(
        profile_app=group_lag(
            settings, brokers, settings.consumer_group, settings.topic_events, now, timeout
        ),
        archiver=group_lag(
            settings, brokers, settings.archiver_consumer_group, settings.topic_events, now, timeout
        ),
        dlq=dlq_rate(previous, snapshot),
        snapshot=snapshot,
    )
