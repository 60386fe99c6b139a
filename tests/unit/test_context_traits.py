"""Geo, device and campaign from metadata.context: archive columns and profile fields; bots left out."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from assets.batch_sql import recompute_documents
from enrichment.catalog import Catalog
from quality.archive_schema import valid_events_schema
from streaming.archiver.rows import ARCHIVE_SCHEMA, archive_row, conform
from streaming.profiles.admission import Admission
from tests.reference_recompute import recompute_profiles

GAP_MS = 1_800_000
BERLIN = {"country": "DE", "region": "BE", "city": "Berlin"}
PARIS = {"country": "FR", "city": "Paris"}
PHONE = {"type": "mobile", "browser": "Mobile Safari", "os": "iOS"}
SPRING = {"source": "newsletter", "medium": "email", "name": "spring", "campaign_id": "c1"}
ADS = {"source": "ads", "medium": "cpc"}


def _raw(n: int, ts: str, context: dict | None, user: str = "u1") -> bytes:
    event = {
        "event_id": f"00000000-0000-4000-8000-{n:012d}",
        "event_type": "page_view",
        "user_id": user,
        "timestamp": ts,
        "metadata": {"url": "https://shop.example/"} | ({"context": context} if context else {}),
    }
    return json.dumps(event).encode()


RAW = [
    _raw(2, "2026-03-01T10:00:00Z", {"geo": PARIS, "campaign": ADS}),
    _raw(1, "2026-03-01T09:00:00Z", {"geo": BERLIN, "device": PHONE, "campaign": SPRING}),
    _raw(3, "2026-03-01T11:00:00Z", None),
    _raw(4, "2026-03-01T12:00:00Z", {"geo": BERLIN, "bot": True, "bot_reason": "user_agent"}),
    _raw(5, "2026-03-01T12:00:00Z", {"device": {"type": "bot"}, "bot": True}, user="crawler"),
]


def _archive(root: Path) -> None:
    folder = root / "events" / "dt=2026-03-01" / "hour=10"
    folder.mkdir(parents=True)
    rows = [archive_row(raw, "events", 0, offset, 0) for offset, raw in enumerate(RAW)]
    pq.write_table(pa.Table.from_pylist(rows, schema=ARCHIVE_SCHEMA), folder / "part.parquet")


def test_profiles_show_the_last_geo_and_device_and_first_campaign_without_bots(tmp_path):
    catalog = Catalog()
    stream = recompute_profiles(RAW, catalog, GAP_MS)
    _archive(tmp_path)
    assert recompute_documents(tmp_path, {}, GAP_MS) == stream
    person = stream["u1"]
    assert person["event_count"] == 3  # the bot's page view is left out
    assert person["last_geo"] == PARIS and person["last_device"] == PHONE
    assert person["first_campaign"] == SPRING and person["last_campaign"] == ADS
    assert "crawler" not in stream


def test_with_bots_in_profiles_they_count_in_every_engine(tmp_path):
    stream = recompute_profiles(RAW, Catalog(), GAP_MS, admission=Admission(keep_bots=True))
    _archive(tmp_path)
    assert recompute_documents(tmp_path, {}, GAP_MS, admission=Admission(keep_bots=True)) == stream
    assert stream["u1"]["event_count"] == 4 and stream["u1"]["last_geo"] == BERLIN
    assert stream["crawler"]["last_device"] == {"type": "bot"}


def test_a_profile_without_context_has_no_such_fields():
    person = recompute_profiles([_raw(3, "2026-03-01T11:00:00Z", None)], Catalog(), GAP_MS)["u1"]
    assert not {"last_geo", "last_device", "first_campaign", "last_campaign"} & person.keys()


def test_archive_rows_carry_the_context_columns_and_pass_the_schema():
    row = archive_row(RAW[1], "events", 0, 1, 0)
    assert (row["is_bot"], row["geo_country"], row["geo_city"], row["device_type"], row["os"]) == (
        False,
        "DE",
        "Berlin",
        "mobile",
        "iOS",
    )
    assert (row["utm_source"], row["utm_medium"], row["utm_campaign"], row["campaign_id"]) == (
        "newsletter",
        "email",
        "spring",
        "c1",
    )
    bot = archive_row(RAW[3], "events", 0, 3, 0)
    assert bot["is_bot"] is True and bot["bot_reason"] == "user_agent"
    invalid = archive_row(b"{", "events", 0, 9, 0)
    assert invalid["is_bot"] is None and invalid["geo_country"] is None
    frame = pa.Table.from_pylist(
        [archive_row(raw, "events", 0, i, 0) for i, raw in enumerate(RAW)], schema=ARCHIVE_SCHEMA
    ).to_pandas()
    valid_events_schema().validate(frame)


def test_files_of_older_releases_conform_with_null_context_columns():
    old = pa.table({"raw": [b"x"], "valid": [False], "kafka_offset": [7]})
    table = conform(old)
    assert table.schema == ARCHIVE_SCHEMA
    assert table.column("is_bot").to_pylist() == [None] and table.column("kafka_offset").to_pylist() == [7]
