"""Hypothesis strategies built from the event contract's own rules (quality/event_contract.py).

Valid events are generated from ``STANDARD_EVENT_TYPES``, ``CUSTOM_EVENT_TYPE_PATTERN``,
``METADATA_RULES`` and ``COMMON_METADATA_RULES``, so a rule added to the contract is fuzzed
without touching this file.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from quality.event_contract import (
    COMMON_METADATA_RULES,
    MAX_ID_LENGTH,
    METADATA_RULES,
    STANDARD_EVENT_TYPES,
    MetadataRule,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Ids that would break a naive Redis key layout or glob: separators, hash tags, globs, escapes.
HOSTILE_IDS = (
    "a:b",
    "a",
    "{tag}",
    "{",
    "}",
    "*",
    "%7B",
    "%",
    "a}b{c",
    "x}:p",
    "u:seen:1",
    "[a-z]?",
    "\\",
    "tab\there",
    "nul\x00byte",
    "é ü 🙂",
    "z" * MAX_ID_LENGTH,
)
#: Custom event types are lower-case identifiers (``CUSTOM_EVENT_TYPE_PATTERN`` without anchors).
CUSTOM_TYPE_BODY = r"[a-z][a-z0-9_]{0,63}"
FIELDS_OF_RULES = frozenset(
    r.field for rules in (COMMON_METADATA_RULES, *METADATA_RULES.values()) for r in rules
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)

ids = st.text(min_size=1, max_size=MAX_ID_LENGTH).filter(lambda s: s.strip()) | st.sampled_from(HOSTILE_IDS)
event_types = st.sampled_from(STANDARD_EVENT_TYPES) | st.from_regex(CUSTOM_TYPE_BODY, fullmatch=True)
offsets = st.sampled_from(
    [timezone.utc, timezone(timedelta(hours=2)), timezone(timedelta(hours=-7, minutes=-30))]
)


def rules_for(event_type: str) -> dict[str, MetadataRule]:
    """Rules that apply to an event type, the type's own overriding the common ones by field."""
    return {r.field: r for r in (*COMMON_METADATA_RULES, *METADATA_RULES.get(event_type, ()))}


def rule_values(rule: MetadataRule) -> st.SearchStrategy[Any]:
    """Values that satisfy one metadata rule."""
    if rule.kind == "string":
        return st.text(min_size=1, max_size=MAX_ID_LENGTH)
    if rule.kind == "object":
        return st.dictionaries(st.text(max_size=8), json_values, max_size=4)
    low = 0 if rule.minimum is None else rule.minimum
    high = 10**15 - 1 if rule.maximum is None else rule.maximum
    if rule.kind == "integer":
        return st.integers(int(low), int(high))
    return st.integers(int(low), int(high)) | st.floats(low, high, allow_nan=False)


def iso(moment: datetime, tz: timezone) -> str:
    """RFC 3339 text of an aware datetime in ``tz``, sometimes with the Z form."""
    text = moment.astimezone(tz).isoformat()
    return text.replace("+00:00", "Z") if text.endswith("+00:00") else text


@st.composite
def valid_events(draw: st.DrawFn, *, moments: st.SearchStrategy[datetime] | None = None) -> dict[str, Any]:
    """A JSON-ready event that satisfies every rule of the contract."""
    event_type = draw(event_types)
    moment = draw(moments or st.datetimes(datetime(1971, 1, 1), datetime(2200, 1, 1), timezones=st.just(UTC)))
    body: dict[str, Any] = {
        "event_id": str(draw(st.uuids())),
        "event_type": event_type,
        "timestamp": iso(moment, draw(offsets)),
    }
    if draw(st.booleans()):
        body["event_id"] = body["event_id"].upper()
    who = draw(st.sampled_from(["user", "both"] if event_type == "identify" else ["user", "anon", "both"]))
    if who in ("user", "both"):
        body["user_id"] = draw(ids)
    if who in ("anon", "both"):
        body["anonymous_id"] = draw(ids)
    metadata: dict[str, Any] = {}
    for field, rule in rules_for(event_type).items():
        if rule.required or draw(st.booleans()):
            metadata[field] = draw(rule_values(rule))
    extra = draw(
        st.dictionaries(
            st.text(max_size=10).filter(lambda k: k not in FIELDS_OF_RULES), json_values, max_size=3
        )
    )
    metadata.update(extra)
    if metadata or draw(st.booleans()):
        body["metadata"] = metadata
    if draw(st.booleans()):
        body["received_at"] = iso(moment, timezone.utc)
    return body


def ms_of(text: str) -> int:
    """Epoch ms of an RFC 3339 text, computed exactly (no float)."""
    return (datetime.fromisoformat(text) - EPOCH) // timedelta(milliseconds=1)


def to_bytes(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode()


# -- profile event sequences ------------------------------------------------------------------

BASE_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
MINUTE = 60_000
SESSION_GAP_MS = 30 * MINUTE
#: User and anonymous ids; three are in both pools, as a hostile client may send them.
PEOPLE = ("u1", "u2", "a:b", "{tag}", "*", "%7B")
VISITORS = ("a1", "a2", "{tag}", "%7B", "x}:p", "*")
PRODUCTS = tuple(f"p{i}" for i in range(13)) + ("p:1", "{p}")
CATEGORIES = ("shoes", "books", "a:b")


@st.composite
def profile_events(
    draw: st.DrawFn, people: tuple[str, ...] = PEOPLE, visitors: tuple[str, ...] = VISITORS
) -> dict[str, Any]:
    """A valid event for profile arithmetic: few people, products and categories, so they collide.

    Times fall within ten hours in clusters, so sessions form, split and merge.
    """
    event_type = draw(
        st.sampled_from(
            [
                "page_view",
                "page_view",
                "click",
                "add_to_cart",
                "remove_from_cart",
                "purchase",
                "search",
                "identify",
                "wishlist_add",
            ]
        )
    )
    cluster = draw(st.integers(0, 9)) * 60 * MINUTE
    ts = BASE_MS + cluster + draw(st.integers(0, 50 * MINUTE))
    tz = draw(offsets)
    body: dict[str, Any] = {
        "event_id": str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1)))),
        "event_type": event_type,
        "timestamp": iso(EPOCH + timedelta(milliseconds=ts), tz),
    }
    who = "both" if event_type == "identify" else draw(st.sampled_from(["user", "user", "anon", "both"]))
    if who in ("user", "both"):
        body["user_id"] = draw(st.sampled_from(people))
    if who in ("anon", "both"):
        body["anonymous_id"] = draw(st.sampled_from(visitors))
    meta: dict[str, Any] = {}
    if event_type != "identify" and (
        event_type in ("add_to_cart", "remove_from_cart") or draw(st.booleans())
    ):
        meta["product_id"] = draw(st.sampled_from(PRODUCTS))
    if draw(st.booleans()):
        meta["quantity"] = draw(st.integers(1, 5))
    if event_type == "purchase":
        meta["order_id"] = draw(st.sampled_from(["o1", "o2", "o3"]))
        meta["price"] = draw(st.integers(0, 100_000)) / 100
    elif event_type == "search":
        meta["query"] = draw(st.text(min_size=1, max_size=5))
    if event_type == "page_view" and draw(st.booleans()):
        meta["category"] = draw(st.sampled_from(CATEGORIES))
    if draw(st.integers(0, 2)) == 0:
        meta["context"] = draw(request_contexts)
    body["metadata"] = meta
    if draw(st.integers(0, 3)) == 0:
        body["consent"] = draw(consents)
    return body


#: An event's consent (docs/events.md): personalization granted, refused or unsaid.
consents = st.fixed_dictionaries(
    {}, optional={"personalization": st.booleans(), "analytics": st.booleans(), "ads": st.booleans()}
)


#: What the collector writes in metadata.context (enrichment/request_context.py), a few of each,
#: so the last/first context traits meet ties and bots are sometimes left out.
request_contexts = st.fixed_dictionaries(
    {},
    optional={
        "geo": st.sampled_from([{"country": "DE", "region": "BE"}, {"country": "FR", "city": "Paris"}]),
        "device": st.sampled_from(
            [{"type": "mobile", "browser": "Mobile Safari", "os": "iOS"}, {"type": "desktop", "os": "Ubuntu"}]
        ),
        "campaign": st.sampled_from(
            [
                {"source": "newsletter", "medium": "email"},
                {"source": "ads", "name": "Früh", "campaign_id": "c2"},
            ]
        ),
        "bot": st.just(True),
    },
)


@st.composite
def event_streams(
    draw: st.DrawFn, *, min_size: int = 1, max_size: int = 40, visitors: tuple[str, ...] = VISITORS
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(distinct events, the same events delivered with duplicates in any order)."""
    events = draw(
        st.lists(
            profile_events(PEOPLE, visitors),
            min_size=min_size,
            max_size=max_size,
            unique_by=lambda e: e["event_id"],
        )
    )
    duplicates = draw(st.lists(st.sampled_from(events), max_size=len(events))) if events else []
    delivered = draw(st.permutations(events + duplicates))
    return events, delivered
