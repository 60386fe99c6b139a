"""The SDK's own copy of the Pulse wire format (DESIGN.md, "Event contract").

The server's contract lives in ``quality/event_contract.py``; the SDK may not import it, so it
carries these constants and checks itself. ``tests/unit/test_sdk_contract.py`` holds the two
equal: change both together.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pulse_sdk.errors import EventContractError

SCHEMA_VERSION = "3"
#: The largest event, as the SDK encodes it (compact JSON in UTF-8).
MAX_EVENT_BYTES = 32 * 1024
#: Per-request limits of ``POST /v1/events``.
MAX_REQUEST_EVENTS = 500
MAX_REQUEST_BYTES = 512 * 1024

STANDARD_EVENT_TYPES: tuple[str, ...] = (
    "page_view",
    "click",
    "add_to_cart",
    "remove_from_cart",
    "purchase",
    "search",
    "identify",
)
CUSTOM_EVENT_TYPE_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
UUID_PATTERN = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
MAX_ID_LENGTH = 256
#: Top-level fields an event may carry.
KNOWN_FIELDS = frozenset(
    {"event_id", "event_type", "user_id", "anonymous_id", "timestamp", "metadata", "consent", "received_at"}
)
#: Consent purposes the server acts on (``consent`` may name others).
CONSENT_PURPOSES = ("analytics", "personalization")
CONSENT_PURPOSE_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
MAX_CONSENT_PURPOSES = 32
MAX_PRICE = 1_000_000
MAX_QUANTITY = 1_000
#: Event time must fall in [1970-01-01, 9999-12-31] UTC.
MIN_TIMESTAMP_MS = 0
MAX_TIMESTAMP_MS = 253_402_300_799_999


@dataclass(frozen=True, slots=True)
class MetadataRule:
    """A constraint on one metadata field of one event type."""

    field: str
    kind: str  # "string" | "number" | "integer" | "object"
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None


#: Per-type metadata rules; types not listed have none.
METADATA_RULES: dict[str, tuple[MetadataRule, ...]] = {
    "purchase": (
        MetadataRule("order_id", "string", required=True),
        MetadataRule("price", "number", required=True, minimum=0, maximum=MAX_PRICE),
        MetadataRule("quantity", "integer", minimum=1, maximum=MAX_QUANTITY),
    ),
    "add_to_cart": (
        MetadataRule("product_id", "string", required=True),
        MetadataRule("quantity", "integer", minimum=1, maximum=MAX_QUANTITY),
        MetadataRule("price", "number", minimum=0, maximum=MAX_PRICE),
    ),
    "remove_from_cart": (
        MetadataRule("product_id", "string", required=True),
        MetadataRule("quantity", "integer", minimum=1, maximum=MAX_QUANTITY),
    ),
    "search": (MetadataRule("query", "string", required=True),),
    "identify": (MetadataRule("traits", "object"),),
}
#: Rules for every event type, when the field is present.
COMMON_METADATA_RULES: tuple[MetadataRule, ...] = (
    MetadataRule("product_id", "string"),
    MetadataRule("category", "string"),
    MetadataRule("quantity", "integer", minimum=1, maximum=MAX_QUANTITY),
    MetadataRule("price", "number", minimum=0, maximum=MAX_PRICE),
    MetadataRule("currency", "string"),
)

_CUSTOM_EVENT_TYPE = re.compile(CUSTOM_EVENT_TYPE_PATTERN)
_STANDARD = frozenset(STANDARD_EVENT_TYPES)
_UUID = re.compile(UUID_PATTERN)
_CONSENT_PURPOSE = re.compile(CONSENT_PURPOSE_PATTERN)
_RULES_BY_TYPE = {t: (*COMMON_METADATA_RULES, *rules) for t, rules in METADATA_RULES.items()}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


def validate_event(obj: Any) -> None:
    """Raise ``EventContractError`` (with the collector's message) unless ``obj`` is a valid event."""
    if not isinstance(obj, dict):
        raise EventContractError(f"event must be a JSON object, got {_json_type(obj)}")
    unknown = obj.keys() - KNOWN_FIELDS
    if unknown:
        raise EventContractError(f"unknown field(s): {', '.join(sorted(map(str, unknown)))}")
    event_id = _require_string(obj, "event_id")
    if not _UUID.fullmatch(event_id):
        raise EventContractError(f"event_id must be a UUID, got {event_id!r}")
    event_type = _require_string(obj, "event_type")
    if event_type not in _STANDARD and not _CUSTOM_EVENT_TYPE.fullmatch(event_type):
        raise EventContractError(
            f"event_type {event_type!r} is not a standard type and does not match {CUSTOM_EVENT_TYPE_PATTERN}"
        )
    user_id = _optional_id(obj, "user_id")
    anonymous_id = _optional_id(obj, "anonymous_id")
    if event_type == "identify":
        if not user_id:
            raise EventContractError("identify needs user_id")
    elif not (user_id or anonymous_id):
        raise EventContractError("user_id or anonymous_id is required")
    parse_timestamp_ms(_require_string(obj, "timestamp"))
    metadata = obj.get("metadata")
    if metadata is None:
        metadata = {}
    elif not isinstance(metadata, dict):
        raise EventContractError(f"metadata must be an object, got {_json_type(metadata)}")
    _check_metadata(event_type, metadata)
    _check_consent(obj.get("consent"))


def _check_consent(value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise EventContractError(f"consent must be an object, got {_json_type(value)}")
    if len(value) > MAX_CONSENT_PURPOSES:
        raise EventContractError(f"consent names more than {MAX_CONSENT_PURPOSES} purposes")
    for purpose, granted in value.items():
        if not _CONSENT_PURPOSE.fullmatch(purpose):
            raise EventContractError(f"consent purpose {purpose!r} does not match {CONSENT_PURPOSE_PATTERN}")
        if not isinstance(granted, bool):
            raise EventContractError(f"consent.{purpose} must be a boolean, got {_json_type(granted)}")


def parse_timestamp_ms(value: str) -> int:
    """Epoch milliseconds of an RFC 3339 timestamp that carries a timezone (``z`` taken too)."""
    try:
        parsed = datetime.fromisoformat(value[:-1] + "Z" if value.endswith("z") else value)
    except ValueError:
        raise EventContractError(f"timestamp {value!r} is not RFC 3339 / ISO 8601") from None
    if parsed.tzinfo is None:
        raise EventContractError(f"timestamp {value!r} has no timezone (add Z or +00:00)")
    try:
        ms = (parsed - _EPOCH) // _MILLISECOND
    except OverflowError:
        ms = -1
    if not MIN_TIMESTAMP_MS <= ms <= MAX_TIMESTAMP_MS:
        raise EventContractError(f"timestamp {value!r} is outside 1970-01-01 .. 9999-12-31 UTC")
    return ms


def _check_metadata(event_type: str, metadata: Mapping[str, Any]) -> None:
    for rule in _RULES_BY_TYPE.get(event_type, COMMON_METADATA_RULES):
        value = metadata.get(rule.field)
        if value is None:
            if rule.required:
                raise EventContractError(f"{event_type} needs metadata.{rule.field}")
            continue
        if not _matches_kind(value, rule.kind):
            if rule.kind == "string" and isinstance(value, str):
                raise EventContractError(
                    f"metadata.{rule.field} must be a string of 1 to {MAX_ID_LENGTH} characters, "
                    f"got {len(value)}"
                )
            raise EventContractError(f"metadata.{rule.field} must be a {rule.kind}, got {_json_type(value)}")
        if rule.minimum is not None and value < rule.minimum:
            raise EventContractError(f"metadata.{rule.field} must be >= {rule.minimum}, got {value}")
        if rule.maximum is not None and value > rule.maximum:
            raise EventContractError(f"metadata.{rule.field} must be <= {rule.maximum}, got {value}")


def _matches_kind(value: Any, kind: str) -> bool:
    if isinstance(value, bool):
        return False
    if kind == "object":
        return isinstance(value, dict)
    if kind == "string":
        return isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH
    if kind == "integer":
        return isinstance(value, int) and -(2**53) < value < 2**53
    return isinstance(value, (int, float)) and value == value and abs(value) < 1e15


def _require_string(obj: Mapping[str, Any], field: str) -> str:
    value = obj.get(field)
    if value is None:
        raise EventContractError(f"{field} is required")
    if not isinstance(value, str) or not value:
        raise EventContractError(f"{field} must be a non-empty string, got {_json_type(value)}")
    return value


def _optional_id(obj: Mapping[str, Any], field: str) -> str | None:
    value = obj.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise EventContractError(f"{field} must be a non-empty string, got {_json_type(value)}")
    if len(value) > MAX_ID_LENGTH:
        raise EventContractError(f"{field} is longer than {MAX_ID_LENGTH} characters")
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
