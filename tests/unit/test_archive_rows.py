"""The archiver's row building (pure)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given
from hypothesis import strategies as st
from quixstreams.sinks import SinkBatch

from streaming.archiver.rows import ARCHIVE_SCHEMA, archive_row, archive_table, hive_partition
from streaming.archiver.sink import RawEventArchiveSink


@given(st.integers(0, 253_402_300_799_999))
def test_hive_partition_is_the_utc_date_and_hour(ms):
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    assert hive_partition(ms) == (moment.strftime("%Y-%m-%d"), moment.strftime("%H"))


def test_a_row_keeps_the_original_bytes():
    raw = json.dumps({"not": "an event"}).encode()
    assert archive_row(raw, "t", 0, 0, 0)["raw"] == raw


def _event(n: int, ts: str, **extra: object) -> bytes:
    event = {
        "event_id": f"00000000-0000-4000-8000-{n:012d}",
        "event_type": "page_view",
        "anonymous_id": f"a{n}",
        "timestamp": ts,
        "metadata": {"url": "https://shop.example/"},
    }
    return json.dumps(event | extra).encode()


RECORDS = [
    (_event(1, "2026-03-01T09:59:59.999Z", consent={"personalization": False}), 10, 1_772_000_000_000),
    (b"{not json", 11, 1_772_000_000_001),
    (None, 12, 1_772_000_000_002),
    (_event(2, "2026-03-01T10:00:00Z", user_id="u2"), 13, 1_772_000_000_003),
    (
        _event(3, "2026-03-02T00:00:00Z", metadata={"context": {"bot": True, "geo": {"country": "DE"}}}),
        14,
        1_772_000_000_004,
    ),
]


def test_the_columnar_table_holds_exactly_the_rows():
    table = archive_table(RECORDS, "events", 3)
    expected = [archive_row(raw, "events", 3, offset, ts) for raw, offset, ts in RECORDS]
    assert table.schema == ARCHIVE_SCHEMA
    assert table.to_pylist() == pa.Table.from_pylist(expected, schema=ARCHIVE_SCHEMA).to_pylist()
    rows = table.to_pylist()
    assert [r["valid"] for r in rows] == [True, False, False, True, True]
    assert rows[0]["consent_personalization"] is False and rows[0]["consent_analytics"] is None
    assert rows[1]["error"].startswith("invalid JSON") and rows[2]["raw"] == b""
    assert rows[4]["is_bot"] is True and rows[4]["geo_country"] == "DE" and rows[3]["is_bot"] is False
    assert archive_table([], "events", 0).num_rows == 0


def test_the_sink_writes_one_file_per_hour_with_every_row(tmp_path):
    batch = SinkBatch(topic="events", partition=3)
    for raw, offset, ts in RECORDS:
        batch.append(value=raw, key=None, timestamp=ts, headers=[], offset=offset)
    RawEventArchiveSink(tmp_path).write(batch)
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet"))
    arrival = hive_partition(1_772_000_000_000)
    assert files == sorted(
        {
            f"events/dt={dt}/hour={hour}/part-events-3-000000000010-000000000014.parquet"
            for dt, hour in [("2026-03-01", "09"), ("2026-03-01", "10"), ("2026-03-02", "00"), arrival]
        }
    )
    offsets = sorted(
        o for f in tmp_path.rglob("*.parquet") for o in pq.read_table(f)["kafka_offset"].to_pylist()
    )
    assert offsets == [10, 11, 12, 13, 14]
