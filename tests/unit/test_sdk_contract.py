"""The SDK's copy of the wire format (sdk/python/pulse_sdk/contract.py) equals the server's contract.

The SDK may not import ``quality.event_contract``; these tests hold its copy equal: the same
constants and rules, the same verdict and message for any event, and every event the SDK builds
validates under the server's contract and its JSON Schema.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import jsonschema
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pulse_sdk import EventContractError, contract
from pulse_sdk.events import build_event, encode_event
from quality import event_contract as server
from quality.json_schema import event_json_schema
from streaming.api.ingest import MAX_BATCH_EVENTS, MAX_BODY_BYTES
from tests.fuzz.strategies import FIELDS_OF_RULES, json_values, valid_events

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SCHEMA = jsonschema.Draft202012Validator(event_json_schema())
CONSTANTS = (
    "SCHEMA_VERSION",
    "MAX_EVENT_BYTES",
    "STANDARD_EVENT_TYPES",
    "CUSTOM_EVENT_TYPE_PATTERN",
    "UUID_PATTERN",
    "MAX_ID_LENGTH",
    "KNOWN_FIELDS",
    "CONSENT_PURPOSES",
    "CONSENT_PURPOSE_PATTERN",
    "MAX_CONSENT_PURPOSES",
    "MAX_PRICE",
    "MAX_QUANTITY",
    "MIN_TIMESTAMP_MS",
    "MAX_TIMESTAMP_MS",
)


@pytest.mark.parametrize("name", CONSTANTS)
def test_constants_equal_the_servers(name):
    assert getattr(contract, name) == getattr(server, name)


def test_request_limits_equal_the_collectors():
    assert (contract.MAX_REQUEST_EVENTS, contract.MAX_REQUEST_BYTES) == (MAX_BATCH_EVENTS, MAX_BODY_BYTES)


def test_metadata_rules_equal_the_servers():
    def rows(rules: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return [dataclasses.astuple(rule) for rule in rules]

    assert rows(contract.COMMON_METADATA_RULES) == rows(server.COMMON_METADATA_RULES)
    assert {t: rows(r) for t, r in contract.METADATA_RULES.items()} == {
        t: rows(r) for t, r in server.METADATA_RULES.items()
    }


# -- the same verdict, with the same message ---------------------------------------------------


def verdict(validate: Any, body: Any) -> str | None:
    """None when ``validate`` accepts ``body``, else its error message."""
    try:
        validate(body)
    except (EventContractError, server.EventContractError) as exc:
        return str(exc)
    return None


odd_values = st.sampled_from(
    [
        None,
        "",
        " ",
        "x" * 257,
        "Page View",
        "custom_type",
        "x" * 65,
        "not-a-uuid",
        str(uuid.uuid4()).upper(),
        "2024-04-25T14:23:05z",
        "2024-04-25T14:23:05",
        "1969-12-31T23:59:59.999Z",
        "9999-12-31T23:59:59.999-01:00",
        "yesterday",
        -1,
        0,
        10**15,
        2**53,
        1.5,
        float("nan"),
        float("inf"),
        True,
        [],
        {},
    ]
)


@st.composite
def near_valid_events(draw: st.DrawFn) -> Any:
    """A valid event with one field (top-level or metadata) replaced, removed or added."""
    body = draw(valid_events())
    top = sorted(server.KNOWN_FIELDS | {"extra"})
    field = draw(st.sampled_from(top + [f"metadata.{f}" for f in sorted(FIELDS_OF_RULES | {"query"})]))
    target, key = (body, field) if "." not in field else (body.setdefault("metadata", {}), field[9:])
    if draw(st.booleans()) and key in target:
        del target[key]
    else:
        target[key] = draw(odd_values | json_values)
    return draw(st.sampled_from([body, body, [body], "event"]))


@FUZZ
@given(near_valid_events())
def test_the_sdk_and_the_server_give_the_same_verdict(body):
    assert verdict(contract.validate_event, body) == verdict(server.validate_event, body)


consents = st.dictionaries(
    # No newline: Python's jsonschema matches patterns with re.search, where "$" also matches before one.
    st.sampled_from(["analytics", "personalization", "ads_2", "Ads", "", "x" * 65])
    | st.text(st.characters(blacklist_characters="\n"), max_size=5),
    st.booleans() | odd_values,
    max_size=4,
)


@FUZZ
@given(valid_events(), consents)
def test_consent_gets_the_same_verdict_and_the_json_schemas(body, consent):
    body["consent"] = consent
    server_verdict = verdict(server.validate_event, body)
    assert verdict(contract.validate_event, body) == server_verdict
    assert SCHEMA.is_valid(json.loads(json.dumps(body))) == (server_verdict is None)


def test_consent_is_read_into_the_event():
    body = {
        "event_id": "123e4567-e89b-12d3-a456-426614174000",
        "event_type": "click",
        "user_id": "u1",
        "timestamp": "2024-04-25T14:23:05Z",
        "consent": {"personalization": False, "analytics": True},
    }
    assert server.validate_event(body).consent == {"personalization": False, "analytics": True}
    del body["consent"]
    assert server.validate_event(body).consent == {}
    with pytest.raises(server.EventContractError, match="consent.personalization must be a boolean"):
        server.validate_event({**body, "consent": {"personalization": "no"}})


@pytest.mark.parametrize(
    "value", ["2024-04-25T14:23:05.123Z", "2024-04-25t14:23:05+02:00", "1970-01-01T00:00Z"]
)
def test_timestamps_parse_to_the_same_epoch_ms(value):
    assert contract.parse_timestamp_ms(value) == server.parse_timestamp_ms(value)


# -- what the SDK builds and encodes -----------------------------------------------------------


@FUZZ
@given(valid_events(), st.booleans())
def test_events_the_sdk_builds_validate_under_the_servers_contract(body, as_datetime):
    timestamp: Any = body["timestamp"]
    if as_datetime:
        timestamp = datetime.fromisoformat(timestamp)
    event = build_event(
        body["event_type"],
        user_id=body.get("user_id"),
        anonymous_id=body.get("anonymous_id"),
        metadata=body.get("metadata"),
        timestamp=timestamp,
        event_id=body["event_id"],
    )
    raw = encode_event(event)
    parsed = server.parse_event(raw)  # the collector's and the profile app's own check
    assert (parsed.event_id, parsed.event_type) == (body["event_id"], body["event_type"])
    assert parsed.timestamp_ms == server.parse_timestamp_ms(body["timestamp"])
    assert SCHEMA.is_valid(json.loads(raw)), next(SCHEMA.iter_errors(json.loads(raw))).message
    assert msgspec.json.decode(raw) == event


def test_encoding_is_compact_utf8_json_as_before():
    event = build_event(
        "purchase",
        user_id="ü-42",
        metadata={"order_id": "o-1", "price": 59.9, "quantity": 2, "note": "café 🙂", "tags": ["a", None]},
        timestamp="2024-04-25T14:23:05.123Z",
        event_id="123e4567-e89b-12d3-a456-426614174000",
    )
    raw = encode_event(event)
    assert raw == msgspec.json.encode(event)  # what the SDK sent when it encoded with msgspec
    assert "café 🙂".encode() in raw and b": " not in raw and b", " not in raw


def test_common_python_values_in_metadata_encode_as_msgspec_did():
    moment = datetime(2024, 4, 25, 14, 23, 5, 123000, tzinfo=UTC)
    metadata = {"at": moment, "day": moment.date(), "id": uuid.UUID(int=1), "amount": Decimal("1.10")}
    event = build_event("click", user_id="u1", metadata=metadata, timestamp=moment)
    assert json.loads(encode_event(event)) == json.loads(msgspec.json.encode(event))


def test_non_finite_numbers_are_refused_at_the_call_site():
    event = build_event("click", user_id="u1", metadata={"score": float("nan")})
    with pytest.raises(EventContractError, match="not JSON-serializable"):
        encode_event(event)
