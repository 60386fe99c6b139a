"""The Pulse event contract, written once.

The collector, the profile app and the batch (Pandera) checks all validate through this
module; ``quality.json_schema`` exports the same rules as JSON Schema.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import msgspec

SCHEMA_VERSION = "3"
#: The largest event, as its producer encodes it; a ``received_at`` added on the way does not count.
MAX_EVENT_BYTES = 32 * 1024
#: The most a producer's ``received_at`` (an ISO 8601 string) may add to a topic message.
RECEIVED_AT_ALLOWANCE = 96

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
_CUSTOM_EVENT_TYPE = re.compile(CUSTOM_EVENT_TYPE_PATTERN)
_STANDARD_EVENT_TYPES = frozenset(STANDARD_EVENT_TYPES)
# Any RFC 4122 textual form accepted by uuid.UUID is not needed: the canonical 8-4-4-4-12 form is.
UUID_PATTERN = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_UUID = re.compile(UUID_PATTERN)
MAX_ID_LENGTH = 256

#: Top-level fields an event may carry; anything else is rejected so typos surface early.
KNOWN_FIELDS = frozenset(
    {"event_id", "event_type", "user_id", "anonymous_id", "timestamp", "metadata", "consent", "received_at"}
)
#: Consent purposes Pulse acts on (``consent`` may name others; they are kept, not acted on).
CONSENT_PURPOSES = ("analytics", "personalization")
CONSENT_PURPOSE_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
_CONSENT_PURPOSE = re.compile(CONSENT_PURPOSE_PATTERN)
MAX_CONSENT_PURPOSES = 32


@dataclass(frozen=True)
class MetadataRule:
    """A constraint on one metadata field of one event type."""

    field: str
    kind: str  # "string" | "number" | "integer" | "object"
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None


#: Bounds that keep every amount exact in Redis (Lua numbers are doubles, exact below 2**53):
#: a purchase adds at most MAX_PRICE * MAX_QUANTITY * 1e6 micros = 1e15.
MAX_PRICE = 1_000_000
MAX_QUANTITY = 1_000
#: Event time must fall in [1970-01-01, 9999-12-31] UTC (what Parquet partitions and ISO output can hold).
MIN_TIMESTAMP_MS = 0
MAX_TIMESTAMP_MS = 253_402_300_799_999
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


#: Per-type metadata rules (versioned with SCHEMA_VERSION). Types not listed have none.
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

#: Rules that apply to every event type when the field is present.
COMMON_METADATA_RULES: tuple[MetadataRule, ...] = (
    MetadataRule("product_id", "string"),
    MetadataRule("category", "string"),
    MetadataRule("quantity", "integer", minimum=1, maximum=MAX_QUANTITY),
    MetadataRule("price", "number", minimum=0, maximum=MAX_PRICE),
    MetadataRule("currency", "string"),
)


class EventContractError(ValueError):
    """An event does not satisfy the event contract; the message says why."""


class Event(NamedTuple):
    """A validated event. ``timestamp_ms`` is event time in epoch milliseconds (UTC)."""

    event_id: str
    event_type: str
    user_id: str | None
    anonymous_id: str | None
    timestamp: str
    timestamp_ms: int
    metadata: Mapping[str, Any]
    #: Purpose -> granted, as the event says (``consent``); empty when it says nothing.
    consent: Mapping[str, bool] = {}

    @property
    def profile_id(self) -> str:
        """The id the event is keyed and profiled by: user_id, else anonymous_id."""
        return self.user_id or self.anonymous_id  # type: ignore[return-value]


_decoder = msgspec.json.Decoder()
_RECEIVED_AT_KEY = b'"received_at":'


def decode_json(raw: bytes | str) -> Any:
    """Parse JSON bytes; raise EventContractError with a readable reason on failure."""
    try:
        return _decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise EventContractError(f"invalid JSON: {exc}") from None
    except RecursionError:
        raise EventContractError("invalid JSON: nested too deeply") from None
    except UnicodeDecodeError:
        raise EventContractError("invalid JSON: body is not UTF-8") from None


def parse_event(raw: bytes) -> Event:
    """Decode and validate one event from its JSON bytes (as read from the topic)."""
    if len(raw) > MAX_EVENT_BYTES + RECEIVED_AT_ALLOWANCE:
        raise EventContractError(f"event is {len(raw)} bytes; the limit is {MAX_EVENT_BYTES}")
    obj = decode_json(raw)
    if len(raw) > MAX_EVENT_BYTES:
        check_event_size(len(raw), obj.get("received_at") if isinstance(obj, dict) else None)
    return validate_event(obj)


def check_event_size(encoded_bytes: int, received_at: object = None) -> None:
    """Raise unless the event fits once the ``received_at`` its encoding carries is taken out.

    Assumes compact JSON (``"received_at":"..."`` plus one comma), as the collector writes it.
    """
    size = encoded_bytes
    if isinstance(received_at, str):
        size -= len(_RECEIVED_AT_KEY) + len(msgspec.json.encode(received_at)) + 1
    if size > MAX_EVENT_BYTES:
        raise EventContractError(f"event is {size} bytes; the limit is {MAX_EVENT_BYTES}")


def validate_event(obj: Any) -> Event:
    """Validate a decoded JSON value against the contract and return the typed event."""
    # Each check has a fast path for the plain values the contract accepts (a ``str`` that is one);
    # anything else goes through the full check, which accepts or rejects it with its reason.
    if not isinstance(obj, dict):
        raise EventContractError(f"event must be a JSON object, got {_json_type(obj)}")
    if not KNOWN_FIELDS.issuperset(obj):
        unknown = obj.keys() - KNOWN_FIELDS
        raise EventContractError(f"unknown field(s): {', '.join(sorted(map(str, unknown)))}")

    event_id = obj.get("event_id")
    if type(event_id) is not str or not event_id:
        event_id = _require_string(obj, "event_id")
    if not _UUID.fullmatch(event_id):
        raise EventContractError(f"event_id must be a UUID, got {event_id!r}")

    event_type = obj.get("event_type")
    if type(event_type) is not str or not event_type:
        event_type = _require_string(obj, "event_type")
    if event_type not in _STANDARD_EVENT_TYPES and not _CUSTOM_EVENT_TYPE.fullmatch(event_type):
        raise EventContractError(
            f"event_type {event_type!r} is not a standard type and does not match {CUSTOM_EVENT_TYPE_PATTERN}"
        )

    user_id = obj.get("user_id")
    if user_id is not None:
        user_id = _optional_id(obj, "user_id")
    anonymous_id = obj.get("anonymous_id")
    if anonymous_id is not None:
        anonymous_id = _optional_id(obj, "anonymous_id")
    if event_type == "identify":
        if not user_id:
            raise EventContractError("identify needs user_id")
    elif not (user_id or anonymous_id):
        raise EventContractError("user_id or anonymous_id is required")

    timestamp = obj.get("timestamp")
    if type(timestamp) is not str or not timestamp:
        timestamp = _require_string(obj, "timestamp")
    timestamp_ms = parse_timestamp_ms(timestamp)

    metadata = obj.get("metadata")
    if metadata is None:
        metadata = {}
    elif not isinstance(metadata, dict):
        raise EventContractError(f"metadata must be an object, got {_json_type(metadata)}")
    if not _plain_metadata(event_type, metadata):
        _check_metadata(event_type, metadata)
    consent = obj.get("consent")
    consent = {} if consent is None else _consent(consent)

    return Event(event_id, event_type, user_id, anonymous_id, timestamp, timestamp_ms, metadata, consent)


def parse_iso_datetime(value: str) -> datetime:
    """``datetime.fromisoformat`` that also takes RFC 3339's lowercase "z" (it takes "t" already)."""
    return datetime.fromisoformat(value[:-1] + "Z" if value.endswith("z") else value)


def parse_timestamp_ms(value: str) -> int:
    """Parse an RFC 3339 timestamp that carries a timezone into epoch milliseconds."""
    try:  # parse_iso_datetime, inline: this runs for every event
        parsed = datetime.fromisoformat(value[:-1] + "Z" if value[-1:] == "z" else value)
    except ValueError:
        raise EventContractError(f"timestamp {value!r} is not RFC 3339 / ISO 8601") from None
    if parsed.tzinfo is None:
        raise EventContractError(f"timestamp {value!r} has no timezone (add Z or +00:00)")
    try:
        ms = (parsed - _EPOCH) // _MILLISECOND  # integer arithmetic: exact for every year
    except OverflowError:
        ms = -1
    if not MIN_TIMESTAMP_MS <= ms <= MAX_TIMESTAMP_MS:
        raise EventContractError(f"timestamp {value!r} is outside 1970-01-01 .. 9999-12-31 UTC")
    return ms


#: Rules checked per event type, common ones first (custom types get the common ones).
_RULES_BY_TYPE = {t: (*COMMON_METADATA_RULES, *rules) for t, rules in METADATA_RULES.items()}


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


Table = tuple[tuple[str, ...], dict[str, tuple[str, float | None, float | None]]]


def _rule_table(rules: tuple[MetadataRule, ...]) -> Table | None:
    """(required fields, field -> (kind, minimum, maximum)) of a type's rules; None when two rules
    of one field differ (then its events always take the full check)."""
    table: dict[str, tuple[str, float | None, float | None]] = {}
    for rule in rules:
        constraint = (rule.kind, rule.minimum, rule.maximum)
        if table.setdefault(rule.field, constraint) != constraint:
            return None
    return tuple(rule.field for rule in rules if rule.required), table


_RULE_TABLES = {t: _rule_table(rules) for t, rules in _RULES_BY_TYPE.items()}
_COMMON_TABLE = _rule_table(COMMON_METADATA_RULES)
_INTEGER_LIMIT = 2**53


def _plain_metadata(event_type: str, metadata: Mapping[str, Any]) -> bool:
    """True when ``_check_metadata`` surely accepts: every required field there, every checked one
    of its plain type (``str``, ``int``, ``float``, ``dict``) and in its bounds. False: not sure, run
    ``_check_metadata`` (which raises the error of the first rule broken, in rule order)."""
    table = _RULE_TABLES.get(event_type, _COMMON_TABLE)
    if table is None:
        return False
    required, rules = table
    for name in required:
        if metadata.get(name) is None:
            return False
    for name, value in metadata.items():
        rule = rules.get(name)
        if rule is None or value is None:
            continue
        kind, minimum, maximum = rule
        plain = type(value)
        if kind == "string":
            if plain is not str or not 0 < len(value) <= MAX_ID_LENGTH:
                return False
            continue
        if kind == "object":
            if plain is not dict:
                return False
            continue
        if kind == "integer":
            if plain is not int or not -_INTEGER_LIMIT < value < _INTEGER_LIMIT:
                return False
        elif (plain is not float and plain is not int) or value != value or not abs(value) < 1e15:
            return False
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            return False
    return True


def _consent(value: Any) -> Mapping[str, bool]:
    """The ``consent`` object: purpose names to booleans (absent: empty)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise EventContractError(f"consent must be an object, got {_json_type(value)}")
    if len(value) > MAX_CONSENT_PURPOSES:
        raise EventContractError(f"consent names more than {MAX_CONSENT_PURPOSES} purposes")
    for purpose, granted in value.items():
        if not _CONSENT_PURPOSE.fullmatch(purpose):
            raise EventContractError(f"consent purpose {purpose!r} does not match {CONSENT_PURPOSE_PATTERN}")
        if not isinstance(granted, bool):
            raise EventContractError(f"consent.{purpose} must be a boolean, got {_json_type(granted)}")
    return value


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
