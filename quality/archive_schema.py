"""Pandera schema of valid archive rows, derived from the event contract (not a second copy).

The event types, the custom-type pattern, the UUID form and the id length limit all come
from ``quality.event_contract``; the batch checks therefore accept exactly what the stream
accepts.
"""

from __future__ import annotations

import pandera.pandas as pa

from quality.event_contract import (
    CONSENT_PURPOSES,
    CUSTOM_EVENT_TYPE_PATTERN,
    MAX_ID_LENGTH,
    STANDARD_EVENT_TYPES,
    UUID_PATTERN,
)

#: The archive's context columns other than is_bot and device_type (streaming/archiver/rows.py).
CONTEXT_TEXT_COLUMNS = (
    "bot_reason",
    "browser",
    "os",
    "geo_country",
    "geo_region",
    "geo_city",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "campaign_id",
)
#: What ``metadata.context.device.type`` may say (enrichment/user_agent.py).
DEVICE_TYPES = ("desktop", "mobile", "tablet", "bot", "other")


def _event_type_ok(series):
    return series.isin(STANDARD_EVENT_TYPES) | series.str.fullmatch(CUSTOM_EVENT_TYPE_PATTERN.strip("^$"))


def _id_column() -> pa.Column:
    return pa.Column(str, nullable=True, checks=pa.Check.str_length(1, MAX_ID_LENGTH))


def valid_events_schema() -> pa.DataFrameSchema:
    """Columns of the archive's valid rows, as DuckDB hands them to pandas."""
    return pa.DataFrameSchema(
        {
            "event_id": pa.Column(str, checks=pa.Check.str_matches(f"^{UUID_PATTERN}$")),
            "event_type": pa.Column(
                str, checks=pa.Check(_event_type_ok, error="standard type or custom pattern")
            ),
            "user_id": _id_column(),
            "anonymous_id": _id_column(),
            "event_time": pa.Column("datetime64[ns, UTC]", coerce=True),
            "kafka_partition": pa.Column(int, checks=pa.Check.ge(0), coerce=True),
            "kafka_offset": pa.Column(int, checks=pa.Check.ge(0), coerce=True),
            # metadata.context as the collector wrote it; absent in archives of older releases
            "is_bot": pa.Column("boolean", nullable=True, required=False, coerce=True),
            "device_type": pa.Column(str, nullable=True, required=False, checks=pa.Check.isin(DEVICE_TYPES)),
            **{name: pa.Column(str, nullable=True, required=False) for name in CONTEXT_TEXT_COLUMNS},
            # the event's consent per purpose, null when unsaid; absent in archives of older releases
            **{
                f"consent_{purpose}": pa.Column("boolean", nullable=True, required=False, coerce=True)
                for purpose in CONSENT_PURPOSES
            },
        },
        checks=[
            pa.Check(
                lambda df: df["user_id"].notna() | df["anonymous_id"].notna(),
                error="user_id or anonymous_id is required",
            ),
            pa.Check(
                lambda df: (df["event_type"] != "identify") | df["user_id"].notna(),
                error="identify needs user_id",
            ),
        ],
        unique=["kafka_partition", "kafka_offset"],
        strict=False,
        name="archive_valid_events",
    )
