"""Pure parts of embedded-broker maintenance: the offset-gap batch, the hold handshake, the drain rule."""

from __future__ import annotations

import json
import struct
import threading
import time

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
from streaming.api.delivery import note_producer_id


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
    supervisor.begin_prepare(3)
    assert collector.preparing() and collector.held_generation() is None  # intake still flows
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
    assert collector.restarted_generation() is None
    supervisor.begin_restarted(3)  # the new broker is up: new producers, new applications
    assert collector.restarted_generation() == 3 and collector.held_generation() == 3
    collector.ready(3, pid=11)
    assert supervisor.acknowledgements(3, READY_PREFIX) == 1 and supervisor.acknowledgements(3) == 1
    supervisor.release()
    assert collector.held_generation() is None and not supervisor.requested()
    assert collector.restart_generation() is None and not collector.preparing()
    assert collector.restarted_generation() is None
    assert supervisor.acknowledgements(3) == 0 and supervisor.acknowledgements(3, STOPPED_PREFIX) == 0
    assert supervisor.acknowledgements(3, READY_PREFIX) == 0


def test_a_producer_counts_as_ready_once_its_statistics_say_it_holds_a_producer_id():
    has_id = threading.Event()
    note_producer_id(json.dumps({"eos": {"idemp_state": "WaitTransport"}}), has_id)
    note_producer_id("not json", has_id)
    assert not has_id.is_set()
    note_producer_id(json.dumps({"eos": {"idemp_state": "Assigned", "producer_id": 1}}), has_id)
    assert has_id.is_set()


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
