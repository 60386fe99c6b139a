import json

import jsonschema
import msgspec
import pytest

from quality.event_contract import MAX_EVENT_BYTES, EventContractError, parse_event, validate_event
from quality.json_schema import event_json_schema

BASE = {
    "event_id": "123e4567-e89b-12d3-a456-426614174000",
    "event_type": "page_view",
    "user_id": "u1",
    "timestamp": "2024-04-25T14:23:05.123Z",
    "metadata": {"product_id": "p1", "category": "shoes"},
}


def event(**changes):
    e = {**BASE, **changes}
    return {k: v for k, v in e.items() if v is not ...}


def test_valid_event_parses_with_epoch_ms():
    parsed = validate_event(event())
    assert parsed.timestamp_ms == 1714054985123
    assert parsed.profile_id == "u1"


def test_anonymous_event_is_keyed_by_anonymous_id():
    parsed = validate_event(event(user_id=..., anonymous_id="a1"))
    assert parsed.profile_id == "a1"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"event_id": ...}, "event_id is required"),
        ({"event_id": "not-a-uuid"}, "event_id must be a UUID"),
        ({"event_id": 42}, "event_id must be a non-empty string"),
        ({"event_type": ...}, "event_type is required"),
        ({"event_type": "Page View"}, "is not a standard type"),
        ({"event_type": "x" * 65}, "is not a standard type"),
        ({"user_id": ...}, "user_id or anonymous_id is required"),
        ({"user_id": ""}, "user_id must be a non-empty string"),
        ({"user_id": "u" * 300}, "longer than"),
        ({"timestamp": ...}, "timestamp is required"),
        ({"timestamp": "2024-04-25T14:23:05"}, "has no timezone"),
        ({"timestamp": "yesterday"}, "is not RFC 3339"),
        ({"metadata": []}, "metadata must be an object"),
        ({"metadata": {"quantity": "2"}}, "metadata.quantity must be a integer"),
        ({"metadata": {"quantity": 0}}, "metadata.quantity must be >= 1"),
        ({"metadata": {"price": True}}, "metadata.price must be a number"),
        ({"surprise": 1}, "unknown field(s): surprise"),
        ({"event_type": "identify", "user_id": ..., "anonymous_id": "a1"}, "identify needs user_id"),
        ({"event_type": "identify", "metadata": {"traits": "pro"}}, "metadata.traits must be a object"),
        ({"event_type": "purchase", "metadata": {"price": 3}}, "purchase needs metadata.order_id"),
        (
            {"event_type": "purchase", "metadata": {"order_id": "o1", "price": -1}},
            "metadata.price must be >= 0",
        ),
        ({"event_type": "purchase", "metadata": {"order_id": "o1"}}, "purchase needs metadata.price"),
        ({"event_type": "add_to_cart", "metadata": {}}, "add_to_cart needs metadata.product_id"),
        ({"event_type": "remove_from_cart", "metadata": {}}, "remove_from_cart needs metadata.product_id"),
        ({"event_type": "search", "metadata": {}}, "search needs metadata.query"),
    ],
)
def test_each_rule_rejects_with_a_reason(changes, message):
    with pytest.raises(EventContractError, match=None) as info:
        validate_event(event(**changes))
    assert message in str(info.value)


def test_custom_event_type_and_identify_are_accepted():
    assert validate_event(event(event_type="wishlist_add")).event_type == "wishlist_add"
    assert validate_event(event(event_type="identify", anonymous_id="a1")).anonymous_id == "a1"


def test_identify_needs_only_a_user_id_and_carries_traits_as_an_object():
    identify = validate_event(event(event_type="identify", metadata={"traits": {"plan": "pro", "seats": 3}}))
    assert (identify.user_id, identify.anonymous_id) == ("u1", None)
    assert identify.metadata["traits"] == {"plan": "pro", "seats": 3}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "invalid JSON"),
        (b"\xff\xfe", "invalid JSON"),
        (b"[" * 10_000 + b"]" * 10_000, "nested too deeply"),
        (b"[]", "must be a JSON object"),
        (b"null", "must be a JSON object"),
    ],
)
def test_parse_event_rejects_bad_bytes(raw, message):
    with pytest.raises(EventContractError) as info:
        parse_event(raw)
    assert message in str(info.value)


def test_parse_event_rejects_oversized_events():
    big = json.dumps(event(metadata={"blob": "x" * MAX_EVENT_BYTES})).encode()
    with pytest.raises(EventContractError, match="limit"):
        parse_event(big)


def test_json_schema_agrees_with_validator():
    schema = event_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    assert validator.is_valid(event())
    assert validator.is_valid(event(event_type="purchase", metadata={"order_id": "o", "price": 1.5}))
    assert validator.is_valid(event(event_type="identify", metadata={"traits": {"plan": "pro"}}))
    for bad in (
        event(event_type="purchase", metadata={"price": 3}),
        event(event_type="identify", user_id=..., anonymous_id="a1"),
        event(event_type="identify", metadata={"traits": ["plan"]}),
        event(user_id=...),
        event(surprise=1),
        event(metadata={"quantity": 0}),
    ):
        assert not validator.is_valid(bad), bad
        with pytest.raises(EventContractError):
            validate_event(bad)


def test_the_size_limit_is_the_events_own_and_received_at_does_not_count():
    """32 KB is the event as sent: the collector's received_at may take a topic message past it."""
    from quality.event_contract import check_event_size

    base = event()
    base["metadata"] = {"blob": ""}
    padding = MAX_EVENT_BYTES - len(msgspec.json.encode(base))
    at_limit = {**base, "metadata": {"blob": "x" * padding}}
    assert len(msgspec.json.encode(at_limit)) == MAX_EVENT_BYTES
    with_received_at = msgspec.json.encode({**at_limit, "received_at": "2024-04-25T14:23:05.123Z"})
    assert len(with_received_at) > MAX_EVENT_BYTES
    assert parse_event(with_received_at).event_id == at_limit["event_id"]
    over = msgspec.json.encode(
        {**at_limit, "metadata": {"blob": "x" * (padding + 1)}, "received_at": "2024-04-25T14:23:05.123Z"}
    )
    with pytest.raises(EventContractError, match="32769 bytes; the limit is 32768"):
        parse_event(over)
    with pytest.raises(EventContractError, match="limit"):
        check_event_size(MAX_EVENT_BYTES + 1)


@pytest.mark.parametrize(
    "text", ["2024-04-25t14:23:05z", "2024-04-25T14:23:05.123z", "2024-04-25t14:23:05+02:00"]
)
def test_rfc3339_lowercase_t_and_z_are_accepted(text):
    assert validate_event(event(timestamp=text)).timestamp_ms > 0
