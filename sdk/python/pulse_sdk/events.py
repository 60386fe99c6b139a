"""Build, validate and encode one event at the call site (pure, no I/O).

Validation goes through ``pulse_sdk.contract``, the SDK's copy of the collector's rules, so an
event the SDK accepts is one the collector accepts.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pulse_sdk import codec
from pulse_sdk.contract import MAX_EVENT_BYTES, validate_event
from pulse_sdk.errors import EventContractError


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds and ``Z``, e.g. ``2024-04-25T14:23:05.123Z``."""
    if moment.tzinfo is None:
        raise EventContractError(
            f"timestamp {moment.isoformat()} has no timezone: pass an aware datetime, e.g. datetime.now(UTC)"
        )
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_timestamp() -> str:
    """The current time as an event timestamp."""
    return format_timestamp(datetime.now(UTC))


def build_event(
    event_type: str,
    *,
    user_id: str | None = None,
    anonymous_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    timestamp: datetime | str | None = None,
    event_id: str | uuid.UUID | None = None,
    consent: Mapping[str, bool] | None = None,
) -> dict[str, Any]:
    """An event dict per the contract; a new UUID4 ``event_id`` and the current time by default.

    ``consent`` is the person's consent per purpose (``{"personalization": False}``), if known.
    """
    event: dict[str, Any] = {
        "event_id": str(event_id) if event_id is not None else str(uuid.uuid4()),
        "event_type": event_type,
    }
    if user_id is not None:
        event["user_id"] = user_id
    if anonymous_id is not None:
        event["anonymous_id"] = anonymous_id
    if timestamp is None:
        event["timestamp"] = now_timestamp()
    elif isinstance(timestamp, datetime):
        event["timestamp"] = format_timestamp(timestamp)
    else:
        event["timestamp"] = timestamp
    if metadata:
        event["metadata"] = dict(metadata)
    if consent is not None:
        event["consent"] = dict(consent)
    return event


def encode_event(event: Mapping[str, Any]) -> bytes:
    """Validate an event against the contract and return its compact UTF-8 JSON.

    Raises ``EventContractError`` (a ``ValueError``) saying what is wrong.
    """
    try:
        raw = codec.encode(event)
    except (TypeError, ValueError, RecursionError) as exc:
        raise EventContractError(f"event is not JSON-serializable: {exc}") from None
    # Validate the decoded JSON, i.e. exactly what the collector will see.
    validate_event(codec.decode(raw))
    if len(raw) > MAX_EVENT_BYTES:
        raise EventContractError(f"event is {len(raw)} bytes; the limit is {MAX_EVENT_BYTES}")
    return raw
