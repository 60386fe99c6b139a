"""The dead-letter archive on real Parquet: forget purges it, views count each reject once,
event readers never see a dead letter."""

from __future__ import annotations

import json
import time

import duckdb
from quixstreams.sinks import SinkBatch

from assets.analyst_views import create_views
from assets.archive import read_valid_events
from assets.dead_letters import read_dead_letters, summarize_dead_letters
from assets.forget import purge_archive
from core.archive_layout import dead_letter_partition_folder
from streaming.archiver.dead_letters import DEAD_LETTER_SCHEMA, dead_letter_row
from streaming.archiver.rows import archive_row
from streaming.archiver.sink import ParquetArchiveSink
from streaming.dlq import Origin, dlq_headers
from tests.unit.test_event_contract import event

TS = 1_700_000_000_000
AT = "2023-11-14T22:13:20.000Z"


def archive(root) -> None:
    """Events topic: one valid event, one invalid record (offset 1) that the profile app dead-lettered.
    DLQ: that record (from the profile app), and collector rejects of u1, u2 and of no one."""
    events = SinkBatch(topic="ev", partition=0)
    for offset, raw in enumerate([json.dumps(event()).encode(), b'{"user_id": "u1"}']):
        events.append(
            value=archive_row(raw, "ev", 0, offset, TS), key=None, timestamp=0, headers=[], offset=offset
        )
    ParquetArchiveSink(root).write(events)
    letters = [
        (b'{"user_id": "u1"}', dlq_headers("event_id is required", "profile-app", AT, Origin("ev", 0, 1))),
        (
            b'{"user_id": "u1", "event_type": "purchase"}',
            dlq_headers("event_id is required", "collector", AT),
        ),
        (b'{"userId": "u2", "type": "track"}', dlq_headers("unknown Segment call type 'x'", "segment", AT)),
        (b"garbage", dlq_headers("invalid JSON: JSON is malformed", "collector", AT)),
    ]
    dlq = SinkBatch(topic="dlq", partition=0)
    for offset, (raw, headers) in enumerate(letters):
        row = dead_letter_row(raw, headers, "dlq", 0, offset, TS + offset)
        dlq.append(value=row, key=None, timestamp=0, headers=[], offset=offset)
    sink = ParquetArchiveSink(root, schema=DEAD_LETTER_SCHEMA, folder=dead_letter_partition_folder)
    sink.write(dlq)
    sink.write(dlq)  # a redelivered checkpoint


def test_views_count_each_reject_once_and_event_readers_see_no_dead_letter(tmp_path):
    root = tmp_path / "archive"
    archive(root)
    counts = create_views(tmp_path / "db.duckdb", root)
    assert counts == {"archive_raw": 2, "events": 1, "dead_letters": 4, "events_invalid": 4}
    with duckdb.connect(str(tmp_path / "db.duckdb")) as con:
        sources = con.execute(
            "SELECT source, count(*) FROM events_invalid GROUP BY ALL ORDER BY ALL"
        ).fetchall()
    assert sources == [("collector", 2), ("profile-app", 1), ("segment", 1)]
    assert [e.key for e in read_valid_events(root)] == ["u1"]


def test_an_undead_lettered_invalid_record_shows_as_the_archivers(tmp_path):
    root = tmp_path / "archive"
    batch = SinkBatch(topic="ev", partition=0)
    batch.append(value=archive_row(b"[]", "ev", 0, 0, TS), key=None, timestamp=0, headers=[], offset=0)
    ParquetArchiveSink(root).write(batch)
    create_views(tmp_path / "db.duckdb", root)  # no dead-letter files yet
    with duckdb.connect(str(tmp_path / "db.duckdb")) as con:
        assert con.execute("SELECT source, error FROM events_invalid").fetchall() == [
            ("archiver", "event must be a JSON object, got array")
        ]


def test_summary_groups_reasons_newest_samples_first(tmp_path):
    root = tmp_path / "archive"
    archive(root)
    (first, *rest) = summarize_dead_letters(root, samples=1)
    assert (first.reason, first.count, dict(first.sources)) == (
        "event_id is required",
        2,
        {"collector": 1, "profile-app": 1},
    )
    assert first.samples[0].coordinates.offset == 1  # the later one
    assert sorted(s.reason for s in rest) == ["invalid JSON", "unknown Segment call type …"]
    assert [d.coordinates.offset for d in read_dead_letters(root, reason="EVENT_ID")] == [0, 1]
    assert [d.coordinates.offset for d in read_dead_letters(root, source="segment")] == [2]


def test_forget_purges_the_dead_letters_of_a_forgotten_person(tmp_path):
    root = tmp_path / "archive"
    archive(root)
    now_ms = int(time.time() * 1000)  # forgotten now: after every row's time
    result = purge_archive(root, {"u1": now_ms, "u2": now_ms})
    # the valid event and the invalid record of u1; the dead letters of u1 (2) and u2 (1)
    assert result.totals()["valid"] == 1 and result.totals()["invalid"] == 1
    assert result.totals()["dead_letters"] == 3 and result.rows_removed == 5
    assert result.per_id["u2"]["dead_letters"] == 1
    assert [bytes(d.raw) for d in read_dead_letters(root)] == [b"garbage"]
    assert read_valid_events(root) == []


def test_forget_keeps_the_rows_from_after_the_forget_time(tmp_path):
    """Dead letters received at TS, TS+1, TS+2 (offsets 0-2): a forget at TS+0 takes only u1's first."""
    root = tmp_path / "archive"
    archive(root)
    result = purge_archive(root, {"u1": TS})
    assert result.totals() == {
        "valid": 0,  # its event time (2024) is after the forget
        "invalid": 1,  # received at TS
        "dead_letters": 1,  # received at TS; u1's other one at TS+1
        "duckdb_profiles_batch": 0,
        "duckdb_sessions": 0,
    }
    assert [d.coordinates.offset for d in read_dead_letters(root)] == [1, 2, 3]
