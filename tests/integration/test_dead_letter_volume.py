"""The dead_letter_volume asset and its check, materialized by Dagster over real Parquet files."""

from __future__ import annotations

import json
import time
import uuid

import dagster as dg
import pytest
from quixstreams.sinks import SinkBatch

from assets.dead_letter_volume import dead_letter_volume
from core.archive_layout import dead_letter_partition_folder
from core.resources import PulseResource
from streaming.archiver.dead_letters import DEAD_LETTER_SCHEMA, dead_letter_row
from streaming.archiver.rows import archive_row
from streaming.archiver.sink import ParquetArchiveSink
from streaming.dlq import dlq_headers
from tests.unit.test_event_contract import event

pytestmark = pytest.mark.integration

NOW_MS = int(time.time() * 1000)
HOUR_MS = 3_600_000


def write_events(root, count: int) -> None:
    batch = SinkBatch(topic="ev", partition=0)
    for offset in range(count):
        raw = json.dumps(event(event_id=str(uuid.uuid4()))).encode()
        batch.append(
            value=archive_row(raw, "ev", 0, offset, NOW_MS), key=None, timestamp=0, headers=[], offset=offset
        )
    ParquetArchiveSink(root).write(batch)


def write_dead_letters(root, letters: list[tuple[str, str, int]]) -> None:
    """(error, source, broker time ms) per dead letter."""
    batch = SinkBatch(topic="dlq", partition=0)
    for offset, (error, source, at_ms) in enumerate(letters):
        headers = dlq_headers(error, source, "2026-01-01T00:00:00Z")
        row = dead_letter_row(b'{"user_id": "u1"}', headers, "dlq", 0, offset, at_ms)
        batch.append(value=row, key=None, timestamp=0, headers=[], offset=offset)
    sink = ParquetArchiveSink(root, schema=DEAD_LETTER_SCHEMA, folder=dead_letter_partition_folder)
    sink.write(batch)
    sink.write(batch)  # redelivered: counted once


def materialize(tmp_path) -> dg.ExecuteInProcessResult:
    resource = PulseResource(
        data_dir=str(tmp_path / "pulse"), redis_url="redis://unused", kafka_brokers="unused"
    )
    return dg.materialize([dead_letter_volume], resources={"pulse": resource}, raise_on_error=False)


def test_volume_by_reason_and_share_check(tmp_path, monkeypatch):
    root = tmp_path / "pulse" / "archive"
    write_events(root, 90)
    write_dead_letters(
        root,
        [("event_id must be a UUID, got 'x%d'" % n, "collector", NOW_MS) for n in range(6)]
        + [("purchase needs metadata.order_id", "profile-app", NOW_MS)] * 4
        + [("purchase needs metadata.order_id", "collector", NOW_MS - 2 * HOUR_MS)] * 5,  # outside the hour
    )
    result = materialize(tmp_path)
    assert result.success
    metadata = result.asset_materializations_for_node("dead_letter_volume")[0].metadata
    assert metadata["dead_letters"].value == 10 and metadata["valid_events"].value == 90
    assert metadata["by_reason"].value == {
        "event_id must be a UUID": 6,
        "purchase needs metadata.order_id": 4,
    }
    assert metadata["by_source"].value == {"collector": 6, "profile-app": 4}
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == "dead_letter_share" and not check.passed  # 10 % > 5 %
    assert check.metadata["invalid_share"].value == 0.1

    monkeypatch.setenv("PULSE_DLQ_ALERT_SHARE", "0.2")
    (check,) = materialize(tmp_path).get_asset_check_evaluations()
    assert check.passed


def test_a_quiet_window_passes_below_the_minimum(tmp_path):
    root = tmp_path / "pulse" / "archive"
    write_events(root, 3)
    write_dead_letters(root, [("user_id or anonymous_id is required", "collector", NOW_MS)] * 3)
    (check,) = materialize(tmp_path).get_asset_check_evaluations()
    assert check.passed and check.metadata["invalid_share"].value == 0.5
