"""Map Segment HTTP API messages to Pulse events (pure).

Segment's and RudderStack's SDKs send to Pulse when only their host is changed. Each message
becomes one event of the contract; a message that cannot be mapped is rejected with a reason.
Track names map through data/segment/mapping.json (or PULSE_SEGMENT_MAPPING_FILE); the other
rules are in ``segment_to_event`` (see docs/segment.md).
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from quality.event_contract import CUSTOM_EVENT_TYPE_PATTERN, STANDARD_EVENT_TYPES, EventContractError

#: Namespace of the UUIDv5 that a non-UUID messageId is mapped to (stable across runs).
MESSAGE_ID_NAMESPACE = uuid.UUID("6f1c8d2e-5b7a-4c3e-9d41-2a8b7e0f3c55")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

DEFAULT_MAPPING_FILE = Path(__file__).resolve().parents[2] / "data" / "segment" / "mapping.json"


def load_track_mapping(path: Path = DEFAULT_MAPPING_FILE) -> dict[str, str]:
    """Track event name -> Pulse event type, from the mapping file (checked against the contract)."""
    try:
        mapping = json.loads(path.read_text())["track"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a Segment mapping file ({exc})") from None
    for name, event_type in mapping.items():
        if not isinstance(event_type, str) or not (
            event_type in STANDARD_EVENT_TYPES or re.fullmatch(CUSTOM_EVENT_TYPE_PATTERN, event_type)
        ):
            raise ValueError(
                f"{path}: {name!r} maps to {event_type!r}, which is not an event type of the contract"
            )
    return dict(mapping)


#: Track event names with a standard Pulse type; any other name becomes its snake_case.
DEFAULT_TRACK_MAPPING: dict[str, str] = load_track_mapping()
#: Segment's context.campaign fields and the UTM parameters they come from (name is utm_campaign).
CAMPAIGN_FIELDS = {
    "name": "utm_campaign",
    "source": "utm_source",
    "medium": "utm_medium",
    "term": "utm_term",
    "content": "utm_content",
}


#: Traits of identify and group calls that are not kept (contact details).
PII_TRAITS = frozenset({"email", "phone", "address"})


class SegmentMappingError(EventContractError):
    """A Segment message that has no Pulse event; the message says why."""


def event_id_for(message_id: Any) -> str:
    """messageId as the event_id: itself when it is a UUID, else a stable UUIDv5 of it."""
    if not isinstance(message_id, str) or not message_id:
        raise SegmentMappingError("messageId is required (a non-empty string)")
    if _UUID.match(message_id):
        return message_id.lower()
    return str(uuid.uuid5(MESSAGE_ID_NAMESPACE, message_id))


def snake_case(name: str) -> str:
    """'Product Viewed' -> 'product_viewed'."""
    words = re.findall(r"[A-Za-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name))
    return "_".join(w.lower() for w in words)


def corrected_timestamp(message: dict[str, Any], sent_at: Any, received_at: datetime) -> str:
    """Event time with Segment's clock-skew correction: receivedAt - (sentAt - timestamp)."""
    raw = message.get("timestamp") or message.get("originalTimestamp")
    if not raw:
        return received_at.isoformat()
    if not sent_at:
        return str(raw)
    try:
        event_time = datetime.fromisoformat(str(raw))
        sent = datetime.fromisoformat(str(sent_at))
    except ValueError:
        return str(raw)  # left for the contract to reject with its own reason
    if event_time.tzinfo is None or sent.tzinfo is None:
        return str(raw)
    return (received_at - (sent - event_time)).isoformat()


def segment_to_event(
    message: Any,
    *,
    call: str | None,
    sent_at: Any,
    received_at: datetime,
    track_mapping: dict[str, str] = DEFAULT_TRACK_MAPPING,
) -> dict[str, Any]:
    """The Pulse event of one Segment message (``call`` is the endpoint's type, or None for /v1/batch)."""
    if not isinstance(message, dict):
        raise SegmentMappingError("a Segment message must be a JSON object")
    kind = message.get("type") or call
    properties = message.get("properties") if isinstance(message.get("properties"), dict) else {}
    context = message.get("context") if isinstance(message.get("context"), dict) else {}
    metadata: dict[str, Any] = dict(properties)
    user_id, anonymous_id = message.get("userId"), message.get("anonymousId")

    if kind in ("page", "screen"):
        event_type = "page_view"
        category = message.get("category") or properties.get("category")
        if category:
            metadata["category"] = category
        if message.get("name"):
            metadata.setdefault("page_name", message["name"])
    elif kind == "identify":
        event_type = "identify"
        kept = _kept_traits(message)
        metadata = {"traits": kept} if kept else {}
    elif kind == "alias":
        event_type = "identify"  # an alias links previousId to userId, as identify links anonymous_id
        anonymous_id = message.get("previousId")
        metadata = {"alias": True}
    elif kind == "track":
        name = message.get("event")
        if not isinstance(name, str) or not name.strip():
            raise SegmentMappingError("track needs an event name")
        event_type = track_mapping.get(name) or snake_case(name)
        if not event_type:
            raise SegmentMappingError(f"track event {name!r} has no usable name")
        if event_type == "purchase" and "price" not in metadata:
            total = properties.get("revenue", properties.get("total"))
            if total is not None:
                metadata["price"] = total
    elif kind == "group":
        # The person's membership of a group (an account, a company): not the person's own traits.
        group_id = message.get("groupId")
        if isinstance(group_id, (int, float)) and not isinstance(group_id, bool):
            group_id = str(group_id)
        if not isinstance(group_id, str) or not group_id:
            raise SegmentMappingError("group needs a groupId (a non-empty string)")
        event_type = "group"
        kept = _kept_traits(message)
        metadata = {"group_id": group_id, **({"traits": kept} if kept else {})}
    else:
        raise SegmentMappingError(f"unknown Segment call type {kind!r}")

    _context_metadata(metadata, context)
    event: dict[str, Any] = {
        "event_id": event_id_for(message.get("messageId")),
        "event_type": event_type,
        "timestamp": corrected_timestamp(message, sent_at or message.get("sentAt"), received_at),
        "metadata": metadata,
    }
    if user_id is not None:
        event["user_id"] = str(user_id) if isinstance(user_id, (int, float)) else user_id
    if anonymous_id is not None:
        event["anonymous_id"] = anonymous_id
    consent = consent_of(context)
    if consent:
        event["consent"] = consent
    return event


def consent_of(context: dict[str, Any]) -> dict[str, Any]:
    """Segment's ``context.consent.categoryPreferences`` as Pulse's ``consent``: each category by its
    snake_case name ("Personalization" -> personalization); the contract judges the values."""
    consent = context.get("consent") if isinstance(context.get("consent"), dict) else {}
    preferences = consent.get("categoryPreferences")
    if not isinstance(preferences, dict):
        return {}
    return {snake_case(str(category)) or str(category): granted for category, granted in preferences.items()}


def _kept_traits(message: dict[str, Any]) -> dict[str, Any]:
    """The call's traits without the contact details Pulse does not keep (email, phone, address)."""
    traits = message.get("traits") if isinstance(message.get("traits"), dict) else {}
    return {k: v for k, v in traits.items() if k not in PII_TRAITS}


def _context_metadata(metadata: dict[str, Any], context: dict[str, Any]) -> None:
    if context.get("ip"):
        metadata.setdefault("ip", context["ip"])
    if context.get("userAgent"):
        metadata.setdefault("user_agent", context["userAgent"])
    page = context.get("page") if isinstance(context.get("page"), dict) else {}
    for source, target in (("url", "url"), ("referrer", "referrer")):
        if page.get(source):
            metadata.setdefault(target, page[source])
    campaign = context.get("campaign") if isinstance(context.get("campaign"), dict) else {}
    for name, target in CAMPAIGN_FIELDS.items():
        if campaign.get(name):
            metadata.setdefault(target, campaign[name])
