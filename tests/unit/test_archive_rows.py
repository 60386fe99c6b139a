"""The archiver's row building (pure)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from streaming.archiver.rows import archive_row, hive_partition


@given(st.integers(0, 253_402_300_799_999))
def test_hive_partition_is_the_utc_date_and_hour(ms):
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    assert hive_partition(ms) == (moment.strftime("%Y-%m-%d"), moment.strftime("%H"))


def test_a_row_keeps_the_original_bytes():
    raw = json.dumps({"not": "an event"}).encode()
    assert archive_row(raw, "t", 0, 0, 0)["raw"] == raw
