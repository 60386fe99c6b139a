"""Trait definitions: what a profile trait counts, declared once for every engine (pure).

A trait names its ``kind``, the event types it reads (``on``), an optional CEL ``where`` over
the event, an optional ``field`` (a path into the event), an optional ``window`` of whole UTC
days and, for ``decayed``, a ``half_life``. The built-in profile (``event_count``,
``counts_by_type``, ``cart``, ``purchase_total``, ...) is declared here the same way
(``builtin_traits``); only its structural parts sit beside it: sessions, last products,
anonymous ids and the intent score (``streaming/profiles/update.lua``). The stream (``update.lua`` through
``streaming.traits.ops``), the Python reference, the DuckDB recompute
(``streaming.traits.sql``) and the profile document (``streaming.traits.cells``) all derive
from the same ``TraitDefinition``.

Every trait is stored as *cells*: one mergeable value per (trait, UTC day when windowed, key
when keyed). Each kind's cell merge is commutative and associative, so the stored state depends
only on the set of distinct events applied, never on their order.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from dataclasses import field as dataclass_field

DAY_MS = 86_400_000

KINDS = ("count", "sum", "min", "max", "first", "last", "decayed")
#: The cell merge of each kind (see ``streaming.traits.cells``): n adds integers (sums in
#: millionths), lo/hi keep the least/greatest number, f/l the value of the earliest/latest
#: event (event time, ties by event_id), d adds 2^(t / half-life) as a base-2 log-sum.
CELL_CODES = {"count": "n", "sum": "n", "min": "lo", "max": "hi", "first": "f", "last": "l", "decayed": "d"}
#: Kinds reading a number from ``field``; first/last read any JSON value; count/decayed no field.
NUMERIC_KINDS = frozenset({"sum", "min", "max"})
VALUE_KINDS = frozenset({"first", "last"})
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


@dataclass(frozen=True)
class TraitDefinition:
    """One trait. ``on`` None means every event type; ``field`` is a dotted path (``metadata.price``)."""

    name: str
    kind: str
    on: frozenset[str] | None = None
    where: str | None = None
    field: str | None = None
    window_days: int | None = None
    half_life_days: float | None = None
    #: Built-ins only: cells keyed by the event's type ("event_type"), its resolved category
    #: ("category"), its ``metadata.product_id`` ("product_id"), or one cell per key of the
    #: object at ``field`` ("each").
    keyed_by: str | None = None
    short_name: str = ""  # built-ins: a shorter name in their cells' field names
    #: Built-ins only: an integer measure of the event (``streaming.traits.measures``) in place
    #: of ``field``: the weight a ``count`` adds, or the number ``sum``/``min``/``max`` read.
    measure: str | None = None
    #: Built-ins only: the trait's one field (unkeyed) or field prefix (keyed, e.g. "t:") in the
    #: profile hash, instead of ``x<code>:...`` cells. Such a trait is live since its first
    #: release: it is never registered or backfilled.
    stored_as: str | None = None
    storage_id: str = dataclass_field(init=False, compare=False)

    def __post_init__(self) -> None:
        # Cells live under the name and a digest of what the trait means: a changed definition
        # starts from empty cells (a backfill fills them) instead of mixing two meanings.
        meaning = json.dumps(
            [
                self.kind,
                sorted(self.on) if self.on is not None else None,
                self.where,
                self.field,
                self.window_days,
                self.half_life_days,
                self.keyed_by,
            ]
            + ([self.measure] if self.measure else [])
        )
        digest = hashlib.sha1(meaning.encode()).hexdigest()[:4]
        object.__setattr__(self, "storage_id", f"{self.short_name or self.name}.{digest}")

    @property
    def code(self) -> str:
        return CELL_CODES[self.kind]

    @property
    def half_life_ms(self) -> float:
        return (self.half_life_days or 0.0) * DAY_MS

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(self.field.split(".")) if self.field else ()


@dataclass(frozen=True)
class TraitRead:
    """A profile field read from a trait's cells, over ``window_days`` (None: every cell).

    An absent unkeyed value shows as ``default``; ``positive_only`` keeps a keyed trait's keys
    above 0 (the cart); ``as_time`` shows an epoch-ms value as ISO-8601.
    """

    profile_field: str
    trait: TraitDefinition
    window_days: int | None = None
    default: int | float | None = None
    positive_only: bool = False
    as_time: bool = False
    #: Absent: left out of the profile instead of shown as ``default`` (fields added later).
    omit_absent: bool = False
    #: A value of the field's shape for the rules' dry run (None: one from the trait's kind).
    sample: object = None


def builtin_traits(interest_half_life_days: float = 7.0) -> tuple[TraitDefinition, ...]:
    """The built-in profile's traits: one definition each, for every engine."""
    return (
        TraitDefinition("event_count", "count", stored_as="event_count"),
        TraitDefinition("first_seen", "min", measure="timestamp_ms", stored_as="first_seen"),
        TraitDefinition("last_seen", "max", measure="timestamp_ms", stored_as="last_seen"),
        TraitDefinition("counts_by_type", "count", keyed_by="event_type", stored_as="t:"),
        TraitDefinition(
            "category_views", "count", frozenset({"page_view"}), keyed_by="category", stored_as="v:"
        ),
        TraitDefinition(
            "cart",
            "count",
            frozenset({"add_to_cart", "remove_from_cart", "purchase"}),
            measure="cart_change",
            keyed_by="product_id",
            stored_as="c:",
        ),
        TraitDefinition(
            "purchase_total",
            "sum",
            frozenset({"purchase"}),
            measure="purchase_micros",
            stored_as="purchase_micros",
        ),
        TraitDefinition("engagement_score", "count", measure="engagement_points", stored_as="engagement"),
        TraitDefinition(
            "traits",
            "last",
            frozenset({"identify"}),
            field="metadata.traits",
            keyed_by="each",
            short_name="tr",
        ),
        TraitDefinition(
            "interests",
            "decayed",
            frozenset({"page_view"}),
            half_life_days=interest_half_life_days,
            keyed_by="category",
            short_name="in",
        ),
        TraitDefinition("counts", "count", None, window_days=30, keyed_by="event_type", short_name="ct"),
        # What the collector added from the request (enrichment/request_context.py): plain fields.
        TraitDefinition("last_geo", "last", field="metadata.context.geo", short_name="lg"),
        TraitDefinition("last_device", "last", field="metadata.context.device", short_name="ld"),
        TraitDefinition("first_campaign", "first", field="metadata.context.campaign", short_name="fc"),
        TraitDefinition("last_campaign", "last", field="metadata.context.campaign", short_name="lc"),
    )


#: Shapes of the request-context fields, for the rules' dry run.
CONTEXT_SAMPLES = {
    "last_geo": {"country": "DE", "region": "BE", "city": "Berlin"},
    "last_device": {"type": "mobile", "browser": "Mobile Safari", "os": "iOS"},
    "first_campaign": {"source": "newsletter", "medium": "email", "name": "spring", "campaign_id": "c1"},
    "last_campaign": {"source": "newsletter", "medium": "email", "name": "spring", "campaign_id": "c1"},
}


def builtin_reads(traits: tuple[TraitDefinition, ...]) -> tuple[TraitRead, ...]:
    """The profile fields the built-in traits make, in document order (``counts`` serves two windows)."""
    by_name = {trait.name: trait for trait in traits}
    return (
        TraitRead("first_seen", by_name["first_seen"], as_time=True),
        TraitRead("last_seen", by_name["last_seen"], as_time=True),
        TraitRead("event_count", by_name["event_count"], default=0),
        TraitRead("counts_by_type", by_name["counts_by_type"]),
        TraitRead("category_views", by_name["category_views"]),
        TraitRead("cart", by_name["cart"], positive_only=True),
        TraitRead("purchase_total", by_name["purchase_total"], default=0.0),
        TraitRead("engagement_score", by_name["engagement_score"], default=0),
        TraitRead("traits", by_name["traits"]),
        TraitRead("interests", by_name["interests"]),
        TraitRead("counts_7d", by_name["counts"], 7),
        TraitRead("counts_30d", by_name["counts"], 30),
        *(
            TraitRead(name, by_name[name], omit_absent=True, sample=sample)
            for name, sample in CONTEXT_SAMPLES.items()
        ),
    )
