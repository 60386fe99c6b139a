"""The profile app's checkpoint cadence (streaming/profile_app/cadence.py): pure policy and backlog."""

from confluent_kafka import TopicPartition

from streaming.profile_app.cadence import MAX_INTERVAL_SECONDS, MIN_BACKLOG, Cadence, backlog_of, next_cadence

BASE = Cadence(0.01, 5000)


def test_a_quiet_stream_keeps_the_configured_cadence():
    assert next_cadence(BASE, BASE, backlog=0, processed=10) == BASE
    assert next_cadence(BASE, BASE, backlog=MIN_BACKLOG, processed=0) == BASE
    assert next_cadence(BASE, BASE, backlog=900, processed=10) == BASE  # a hiccup, not a backlog
    assert next_cadence(BASE, BASE, backlog=5000, processed=8000) == BASE  # the next checkpoint takes it


def test_a_backlog_doubles_the_interval_and_the_event_cap_up_to_the_limit():
    cadence, seen = BASE, []
    for _ in range(12):
        cadence = next_cadence(cadence, BASE, backlog=1_000_000, processed=2000)
        seen.append(cadence)
    assert seen[0] == Cadence(0.02, 10_000)
    assert seen[1] == Cadence(0.04, 20_000)
    assert seen[-1].interval_seconds == MAX_INTERVAL_SECONDS
    assert seen[-1].every == round(5000 * MAX_INTERVAL_SECONDS / 0.01)
    assert all(a.interval_seconds <= b.interval_seconds for a, b in zip(seen, seen[1:]))


def test_once_caught_up_the_cadence_is_the_configured_one_again():
    long = Cadence(MAX_INTERVAL_SECONDS, 250_000)
    assert next_cadence(long, BASE, backlog=50, processed=40_000) == BASE


def test_a_configured_interval_longer_than_the_limit_is_never_shortened():
    slow = Cadence(2.0, 0)
    assert next_cadence(slow, slow, backlog=10**6, processed=10) == Cadence(2.0, 0)


class FakeConsumer:
    """What backlog_of reads of a confluent Consumer: assignment, positions, cached watermarks."""

    def __init__(self, positions: dict[int, int], highs: dict[int, int]) -> None:
        self.positions, self.highs = positions, highs

    def assignment(self):
        return [TopicPartition("events", p) for p in self.positions]

    def position(self, partitions):
        return [TopicPartition(tp.topic, tp.partition, self.positions[tp.partition]) for tp in partitions]

    def get_watermark_offsets(self, partition, cached=False):
        assert cached, "the backlog must not cost a request"
        return 0, self.highs[partition.partition]


def test_the_backlog_is_the_sum_over_assigned_partitions_of_high_watermark_minus_position():
    consumer = FakeConsumer({0: 100, 1: -1001, 2: 50}, {0: 400, 1: 900, 2: 50})
    assert backlog_of(consumer) == 300  # partition 1 has no position yet; 2 is caught up
    assert backlog_of(FakeConsumer({}, {})) == 0
