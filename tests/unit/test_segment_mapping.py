from datetime import UTC, datetime

import pytest

from quality.event_contract import validate_event
from streaming.api.segment import SegmentMappingError, event_id_for, segment_to_event, snake_case

NOW = datetime(2024, 4, 25, 12, 0, 0, tzinfo=UTC)


def mapped(message, call=None, sent_at=None):
    event = segment_to_event(message, call=call, sent_at=sent_at, received_at=NOW)
    validate_event(event)  # every mapped event satisfies the contract
    return event


def test_page_with_category_and_context():
    event = mapped(
        {
            "type": "page",
            "messageId": "m-1",
            "anonymousId": "a1",
            "name": "Shoes",
            "properties": {"category": "shoes", "path": "/s"},
            "context": {
                "ip": "1.2.3.4",
                "userAgent": "UA",
                "page": {"url": "https://x/s", "referrer": "https://g"},
                "campaign": {"name": "spring", "source": "news"},
            },
            "timestamp": "2024-04-25T11:59:00Z",
        }
    )
    assert event["event_type"] == "page_view" and event["anonymous_id"] == "a1"
    assert event["metadata"] == {
        "category": "shoes",
        "path": "/s",
        "page_name": "Shoes",
        "ip": "1.2.3.4",
        "user_agent": "UA",
        "url": "https://x/s",
        "referrer": "https://g",
        "utm_campaign": "spring",
        "utm_source": "news",
    }


def test_screen_category_from_the_call():
    assert (
        mapped(
            {
                "type": "screen",
                "messageId": "m",
                "userId": "u",
                "category": "home",
                "timestamp": "2024-04-25T11:00:00Z",
            }
        )["metadata"]["category"]
        == "home"
    )


@pytest.mark.parametrize(
    ("name", "event_type"),
    [
        ("Product Clicked", "click"),
        ("Product Added", "add_to_cart"),
        ("Product Removed", "remove_from_cart"),
        ("Order Completed", "purchase"),
        ("Products Searched", "search"),
        ("Product Viewed", "product_viewed"),
        ("Signed Up!", "signed_up"),
    ],
)
def test_track_names(name, event_type):
    props = {"product_id": "p1", "order_id": "o1", "revenue": 12.5, "query": "q"}
    event = mapped(
        {
            "type": "track",
            "event": name,
            "messageId": "m",
            "userId": "u",
            "properties": props,
            "timestamp": "2024-04-25T11:00:00Z",
        }
    )
    assert event["event_type"] == event_type
    if event_type == "purchase":
        assert event["metadata"]["price"] == 12.5


def test_message_id_maps_to_a_stable_uuid():
    assert event_id_for("123E4567-E89B-12D3-A456-426614174000") == "123e4567-e89b-12d3-a456-426614174000"
    assert event_id_for("ajs-abc") == event_id_for("ajs-abc") != event_id_for("ajs-abd")
    with pytest.raises(SegmentMappingError, match="messageId"):
        event_id_for(None)


def test_identify_and_alias_link_ids():
    identify = mapped(
        {
            "type": "identify",
            "messageId": "m",
            "userId": "u",
            "anonymousId": "a",
            "traits": {"plan": "pro", "email": "x@y"},
            "timestamp": "2024-04-25T11:00:00Z",
        }
    )
    assert (identify["event_type"], identify["user_id"], identify["anonymous_id"]) == ("identify", "u", "a")
    assert identify["metadata"] == {"traits": {"plan": "pro"}}  # no e-mail in events
    server_side = mapped(
        {
            "type": "identify",
            "messageId": "m3",
            "userId": "u",
            "traits": {"plan": "pro"},
            "timestamp": "2024-04-25T11:00:00Z",
        }
    )
    assert "anonymous_id" not in server_side and server_side["metadata"] == {"traits": {"plan": "pro"}}
    alias = mapped(
        {
            "type": "alias",
            "messageId": "m2",
            "userId": "u",
            "previousId": "old",
            "timestamp": "2024-04-25T11:00:00Z",
        }
    )
    assert (alias["event_type"], alias["user_id"], alias["anonymous_id"]) == ("identify", "u", "old")


def test_group_is_a_group_event_with_the_group_id_and_its_traits():
    event = mapped(
        {
            "type": "group",
            "messageId": "m-g",
            "userId": "u",
            "anonymousId": "a",
            "groupId": "acme",
            "traits": {"name": "Acme", "plan": "enterprise", "email": "ops@acme.example"},
            "timestamp": "2024-04-25T11:00:00Z",
        }
    )
    assert (event["event_type"], event["user_id"], event["anonymous_id"]) == ("group", "u", "a")
    assert event["metadata"] == {"group_id": "acme", "traits": {"name": "Acme", "plan": "enterprise"}}
    numeric = mapped({"type": "group", "messageId": "m", "anonymousId": "a", "groupId": 42})
    assert numeric["metadata"] == {"group_id": "42"}


def test_clock_skew_correction():
    # The device clock is 10 minutes fast: the event happened 1 minute before sending.
    event = mapped(
        {"type": "track", "event": "X", "messageId": "m", "userId": "u", "timestamp": "2024-04-25T12:09:00Z"},
        sent_at="2024-04-25T12:10:00Z",
    )
    assert datetime.fromisoformat(event["timestamp"]) == datetime(2024, 4, 25, 11, 59, tzinfo=UTC)


def test_unmappable_messages_say_why():
    for message, reason in (
        ({"type": "group", "messageId": "m", "userId": "u"}, "groupId"),
        ({"type": "group", "messageId": "m", "userId": "u", "groupId": ""}, "groupId"),
        ({"type": "track", "messageId": "m"}, "event name"),
        ("x", "JSON object"),
        ({"type": "nope", "messageId": "m"}, "unknown"),
    ):
        with pytest.raises(SegmentMappingError, match=reason):
            segment_to_event(message, call=None, sent_at=None, received_at=NOW)


def test_snake_case():
    assert snake_case("Product Viewed") == "product_viewed"
    assert snake_case("checkoutStarted") == "checkout_started"


def test_mapping_file_is_loaded_and_checked(tmp_path):
    import json as _json

    from streaming.api.segment import DEFAULT_TRACK_MAPPING, load_track_mapping

    assert DEFAULT_TRACK_MAPPING["Order Completed"] == "purchase"
    custom = tmp_path / "m.json"
    custom.write_text(_json.dumps({"track": {"Checkout Started": "checkout"}}))
    assert load_track_mapping(custom) == {"Checkout Started": "checkout"}
    custom.write_text(_json.dumps({"track": {"X": "Not A Type"}}))
    with pytest.raises(ValueError, match="not an event type"):
        load_track_mapping(custom)


def test_consent_category_preferences_become_the_events_consent():
    message = {
        "type": "track",
        "event": "Product Clicked",
        "messageId": "m-consent",
        "userId": "u1",
        "context": {"consent": {"categoryPreferences": {"Personalization": False, "Analytics": True}}},
        "timestamp": "2024-04-25T11:59:00Z",
    }
    assert mapped(message)["consent"] == {"personalization": False, "analytics": True}
    del message["context"]
    assert "consent" not in mapped(message)
