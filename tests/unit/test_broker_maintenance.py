"""Pure parts of embedded-broker maintenance: the offset-gap batch, the hold handshake, the drain rule."""

from __future__ import annotations

import gc
import json
import struct
import time
import weakref

import pytest

from core.broker_hold import READY_PREFIX, STOPPED_PREFIX, BrokerHold
from core.kafka_config import consumer_tuning
from core.settings import PulseSettings
from orchestration.broker_maintenance import (
    BrokerMaintainer,
    MaintenanceReport,
    PartitionEnds,
    lagging,
    resumed_commits,
)
from orchestration.kafka_wire import (
    crc32c,
    offset_gap_batch,
    produce_request,
    produce_response,
    zigzag_varint,
)
from streaming.next_producer import (
    EARLY_CANDIDATES,
    MAX_CANDIDATES,
    STAGGER_SECONDS,
    NextProducer,
    _Candidate,
    producer_id_assigned_at,
)


def test_crc32c_known_vector():
    assert crc32c(b"123456789") == 0xE3069283  # the Castagnoli check value


def test_zigzag_varint():
    assert zigzag_varint(0) == b"\x00"
    assert zigzag_varint(-1) == b"\x01"
    assert zigzag_varint(1) == b"\x02"
    assert zigzag_varint(150) == b"\xac\x02"


def test_offset_gap_batch_spans_count_offsets_as_a_control_batch():
    batch = offset_gap_batch(1_000_000, now_ms=1234)
    base_offset, length, _leader_epoch, magic, crc = struct.unpack_from(">qiibI", batch)
    attributes, last_offset_delta, first_ts, max_ts, producer_id = struct.unpack_from(">hiqqq", batch, 21)
    assert (base_offset, magic, length) == (0, 2, len(batch) - 12)
    assert crc == crc32c(batch[21:])
    assert attributes & 0x20 and attributes & 0x10  # control + transactional: never delivered
    assert last_offset_delta == 999_999
    assert (first_ts, max_ts, producer_id) == (1234, 1234, -1)


def test_produce_request_and_response_round_trip():
    request = produce_request("pulse.events", 3, b"BATCH", correlation_id=7)
    (size,) = struct.unpack_from(">i", request)
    assert size == len(request) - 4
    api_key, version, correlation = struct.unpack_from(">hhi", request, 4)
    assert (api_key, version, correlation) == (0, 7, 7)
    assert request.endswith(struct.pack(">iii", 1, 3, 5) + b"BATCH")
    name = b"pulse.events"
    response = struct.pack(">iih", 7, 1, len(name)) + name + struct.pack(">iihqqq", 1, 3, 0, 42, -1, 0)
    assert produce_response(response, 7) == (0, 42)


def test_hold_handshake(tmp_path):
    supervisor, collector = BrokerHold(tmp_path / "hold"), BrokerHold(tmp_path / "hold")
    supervisor.prepare()
    assert not supervisor.requested() and collector.held_generation() is None
    assert not collector.preparing()
    collector.request()
    assert supervisor.requested()
    assert collector.coming_generation() is None
    supervisor.begin_prepare(3)
    assert collector.preparing() and collector.held_generation() is None  # intake still flows
    assert collector.coming_generation() == 3  # producers for after it are made from now on
    supervisor.begin(3)
    assert collector.preparing()
    assert collector.held_generation() == 3
    assert supervisor.acknowledgements(3) == 0
    collector.acknowledge(3, pid=11)
    collector.acknowledge(2, pid=12)  # a stale acknowledgement does not count
    assert supervisor.acknowledgements(3) == 1
    supervisor.begin_restart(3)
    assert collector.restart_generation() == 3
    collector.stopped(3, pid=21)
    assert supervisor.acknowledgements(3, STOPPED_PREFIX) == 1
    assert supervisor.acknowledgements(3) == 1  # collectors' and consumer apps' counts apart
    assert collector.down_since(3) is None
    supervisor.broker_down(2, at=5.0)  # a stale generation's
    assert collector.down_since(3) is None
    supervisor.broker_down(3, at=7.5)  # the old broker is gone
    assert collector.down_since(3) == 7.5
    assert collector.restarted_generation() is None
    supervisor.begin_restarted(3)  # the new broker is up: new producers, new applications
    assert collector.restarted_generation() == 3 and collector.held_generation() == 3
    collector.ready(3, pid=11)
    assert supervisor.acknowledgements(3, READY_PREFIX) == 1 and supervisor.acknowledgements(3) == 1
    supervisor.release()
    assert collector.held_generation() is None and not supervisor.requested()
    assert collector.restart_generation() is None and not collector.preparing()
    assert collector.coming_generation() is None
    assert collector.restarted_generation() is None and collector.down_since(3) is None
    assert supervisor.acknowledgements(3) == 0 and supervisor.acknowledgements(3, STOPPED_PREFIX) == 0
    assert supervisor.acknowledgements(3, READY_PREFIX) == 0


def test_the_statistics_say_when_a_producer_got_its_producer_id():
    assert (
        producer_id_assigned_at(json.dumps({"ts": 5_000_000, "eos": {"idemp_state": "WaitTransport"}}))
        is None
    )
    assert producer_id_assigned_at("not json") is None
    assert producer_id_assigned_at(json.dumps({"ts": 5_000_000})) is None  # not idempotent
    stats = {"ts": 5_000_000, "eos": {"idemp_state": "Assigned", "idemp_stateage": 250, "producer_id": 1}}
    assert producer_id_assigned_at(json.dumps(stats)) == pytest.approx(4.75)


class FakeCandidate:
    """A producer whose statistics say it got its producer id at ``assigned_at`` (after ``polls`` polls)."""

    def __init__(self, config: dict, assigned_at: float | None, polls: int = 1) -> None:
        self.config, self.assigned_at, self.polls, self.closed = config, assigned_at, polls, False

    def poll(self, _timeout: float) -> int:
        self.polls -= 1
        if self.polls <= 0 and self.assigned_at is not None:
            stats = {"ts": self.assigned_at * 1e6, "eos": {"idemp_state": "Assigned", "idemp_stateage": 0}}
            self.config["stats_cb"](json.dumps(stats))
        return 0

    def flush(self, _timeout: float) -> int:
        self.closed = True
        return 0


def test_the_next_producer_is_the_first_candidate_with_an_id_of_the_new_broker(monkeypatch):
    """No candidate while the old broker lives; then one every STAGGER_SECONDS. One whose id predates
    the old broker's end is dropped, the first with a later one is chosen and the others closed."""
    now = [100.0]
    ids = iter([99.9, 100.6, 100.7, None])  # when each candidate gets its id (None: never)
    made: list[FakeCandidate] = []

    def make(config: dict) -> FakeCandidate:
        made.append(FakeCandidate(config, next(ids), polls=2))
        return made[-1]

    def step(down_since: float | None = None) -> object:
        result = next_producer.step(down_since)
        now[0] += STAGGER_SECONDS
        return result

    monkeypatch.setattr("streaming.next_producer.close_unused", lambda producer: producer.flush(0))
    next_producer = NextProducer({"bootstrap.servers": "x"}, make=make, clock=lambda: now[0])
    assert step() is None and step() is None and made == []  # the old broker is up: none made
    assert step(down_since=100.0) is None and len(made) == 1
    assert made[0].config["statistics.interval.ms"] > 0 and made[0].config["reconnect.backoff.ms"] <= 50
    assert step() is None and len(made) == 2  # the down time is remembered once the marker goes
    assert step() is None and len(made) == 3
    assert made[0].closed  # its id (99.9) came before the old broker went (100.0): the old broker's
    chosen = step()
    assert chosen is made[1] and not made[1].closed  # id at 100.6, after the old broker went
    assert made[2].closed  # the rest are let go
    assert step() is chosen and len(made) == 3
    assert next_producer.take() is chosen


def test_a_few_candidates_are_made_once_intake_is_held(monkeypatch):
    """Held, the old broker alive: EARLY_CANDIDATES at most, whose first tick (0.5 s on) usually
    falls after the restart; one that got its id while the old broker lived is dropped."""
    now = [100.0]
    ids = iter([100.1, 100.55, 100.6, None])
    made: list[FakeCandidate] = []

    class TimedCandidate(FakeCandidate):
        def poll(self, _timeout: float) -> int:  # reports its id once the clock has passed it
            return super().poll(_timeout) if self.assigned_at and now[0] >= self.assigned_at else 0

    def make(config: dict) -> FakeCandidate:
        made.append(TimedCandidate(config, next(ids)))
        return made[-1]

    monkeypatch.setattr("streaming.next_producer.close_unused", lambda producer: producer.flush(0))
    next_producer = NextProducer({}, make=make, clock=lambda: now[0])
    assert next_producer.step(None) is None and made == []  # prepared only: none
    for _ in range(EARLY_CANDIDATES * 2):  # held until 100.4, the old broker alive
        assert next_producer.step(None, held=True) is None
        now[0] += STAGGER_SECONDS
    assert len(made) == EARLY_CANDIDATES  # no more until the old broker is down
    assert made[0].closed and not made[1].closed  # its id (100.1) came from the old broker
    now[0] = 100.6
    chosen = next_producer.step(down_since=100.5, held=True)
    assert chosen is made[1]  # id at 100.55, after the old broker went at 100.5
    assert made[2].closed and len(made) == EARLY_CANDIDATES


def test_an_unused_candidate_goes_without_a_garbage_collection():
    """Its statistics callback must not hold the candidate: a reference cycle through the producer
    kept unused candidates alive (connected, statistics queued unread) until a full collection,
    which in an app frozen after its rebuild meant until the next maintenance."""
    made: list[weakref.ref] = []

    class Producer:
        def __init__(self, config: dict) -> None:
            self.config = config  # as librdkafka's handle holds its callbacks
            made.append(weakref.ref(self))

    gc.disable()
    try:
        candidate = _Candidate({}, Producer)
        assert made[0]() is not None
        del candidate
        assert made[0]() is None
    finally:
        gc.enable()


def test_candidates_are_bounded(monkeypatch):
    made: list[FakeCandidate] = []
    now = [0.0]

    def make(config: dict) -> FakeCandidate:
        made.append(FakeCandidate(config, assigned_at=None))
        return made[-1]

    monkeypatch.setattr("streaming.next_producer.close_unused", lambda producer: producer.flush(0))
    next_producer = NextProducer({}, make=make, clock=lambda: now[0])
    for _ in range(MAX_CANDIDATES * 3):
        next_producer.step(down_since=-1.0)
        now[0] += STAGGER_SECONDS
    assert len(made) == MAX_CANDIDATES


def test_without_a_candidate_of_the_new_broker_the_release_makes_a_fresh_producer(monkeypatch):
    made: list[FakeCandidate] = []

    def make(config: dict) -> FakeCandidate:
        made.append(FakeCandidate(config, assigned_at=None))
        return made[-1]

    monkeypatch.setattr("streaming.next_producer.close_unused", lambda producer: producer.flush(0))
    next_producer = NextProducer({}, make=make)
    assert next_producer.step(down_since=1.0) is None
    assert next_producer.take() is None and all(candidate.closed for candidate in made)


def test_maintenance_releases_after_the_collectors_new_producers_or_the_timeout(tmp_path, monkeypatch):
    hold = BrokerHold(tmp_path / "hold")
    hold.prepare()
    maintainer = BrokerMaintainer(
        PulseSettings(), "127.0.0.1:1", restart=lambda: None, hold=hold, collectors=2
    )
    maintainer.generation = 4
    hold.ready(4, pid=1)
    hold.ready(4, pid=2)
    maintainer._wait_for_producers()  # both ready: returns at once

    monkeypatch.setattr("orchestration.broker_maintenance.READY_SECONDS", 0.05)
    hold.release()
    hold.ready(4, pid=1)
    hold.ready(3, pid=2)  # a stale one does not count
    started = time.monotonic()
    maintainer._wait_for_producers()  # one of two: released anyway after READY_SECONDS
    assert time.monotonic() - started >= 0.05


def test_lagging_names_required_groups_behind_only():
    ends = {("events", 0): 10, ("events", 1): 0, ("triggers", 0): 5}
    readers = {"events": ["app", "archiver"]}
    commits = {"app": {("events", 0): 10}, "archiver": {("events", 0): 9}}
    assert lagging(ends, commits, readers) == ["archiver at 9 of 10 on events[0]"]
    commits["archiver"][("events", 0)] = 10
    assert lagging(ends, commits, readers) == []  # triggers has no required reader


def test_required_groups_resume_at_the_new_end_others_where_they_were():
    ends = {("events", 0): 120, ("dlq", 0): 7}
    readers = {"events": ["app"], "dlq": ["archiver"]}
    commits = {"app": {("events", 0): 100}, "someone": {("events", 0): 40}}
    assert resumed_commits(ends, commits, readers) == {
        "app": {("events", 0): 120},
        "archiver": {("dlq", 0): 7},  # never committed on a topic with no record: past the markers
        "someone": {("events", 0): 40},
    }


def test_consumers_of_the_embedded_broker_use_a_shorter_session(tmp_path):
    plain = consumer_tuning(PulseSettings())
    embedded = consumer_tuning(PulseSettings(broker_hold_dir=tmp_path))
    assert (plain["session.timeout.ms"], embedded["session.timeout.ms"]) == (3000, 2000)
    assert embedded["heartbeat.interval.ms"] < embedded["session.timeout.ms"] / 3
    overridden = PulseSettings(broker_hold_dir=tmp_path, kafka_config={"session.timeout.ms": 9000})
    assert consumer_tuning(overridden)["session.timeout.ms"] == 9000  # PULSE_KAFKA_CONFIG wins


def test_maintenance_summary_lists_each_phase():
    report = MaintenanceReport(
        4, 0.61, {("pulse.events", 0): 120}, {}, {"catch-up": 0.4, "hold-ack": 0.02, "restart": 0.09}
    )
    assert report.summary() == (
        "broker maintenance 4: restarted empty, intake held 0.61s "
        "(phases in s: catch-up 0.40 hold-ack 0.02 restart 0.09), offsets continue at pulse.events[0]@120"
    )


def test_partition_ends_see_through_their_own_markers_across_attempts():
    log = {("dlq", 0): 8}  # records at offsets 0..7, committed at 8

    def mark(topic: str, partition: int) -> int:
        at = log[(topic, partition)]
        log[(topic, partition)] = at + 1  # a marker takes one offset
        return at

    ends = PartitionEnds([("dlq", 0)], mark)
    assert ends.mark() == {("dlq", 0): 8}
    assert ends.mark() == {("dlq", 0): 8}  # a postponed attempt's markers at 8 and 9 ...
    assert ends.mark() == {("dlq", 0): 8}  # ... and a later attempt's: still nothing to commit
    assert lagging(ends.mark(), {"archiver": {("dlq", 0): 8}}, {"dlq": ["archiver"]}) == []
    log[("dlq", 0)] += 1  # a record at 12
    assert ends.mark() == {("dlq", 0): 13}
    assert ends.final() == {("dlq", 0): 14}
