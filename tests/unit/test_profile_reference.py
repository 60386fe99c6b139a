import random
import uuid

from quality.event_contract import validate_event
from streaming.profiles.delta import event_category, profile_delta
from streaming.profiles.reference import ReferenceProfile, reference_profiles
from streaming.traits.cells import MICROS

MINUTE = 60_000


def make_event(event_type="page_view", ts_ms=0, user_id="u1", anonymous_id=None, **metadata):
    from datetime import UTC, datetime

    body = {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "timestamp": datetime.fromtimestamp(1_700_000_000 + ts_ms / 1000, tz=UTC).isoformat(),
        "metadata": metadata,
    }
    if user_id:
        body["user_id"] = user_id
    if anonymous_id:
        body["anonymous_id"] = anonymous_id
    return validate_event(body)


def delta_of(event, catalog_category=None):
    return profile_delta(event, event_category(event, catalog_category))


def test_category_from_metadata_else_catalog_and_only_page_views_count():
    view = make_event(product_id="p1")
    assert delta_of(view, "shoes").category == "shoes"
    assert delta_of(make_event(product_id="p1", category="books"), "shoes").category == "books"
    assert delta_of(make_event("click", product_id="p1"), "shoes").category == ""


def test_cart_and_purchase_arithmetic():
    profile = ReferenceProfile("u1")
    for e in (
        make_event("add_to_cart", product_id="p1", quantity=3),
        make_event("remove_from_cart", product_id="p1", quantity=1),
        make_event("add_to_cart", product_id="p2"),
        make_event("purchase", product_id="p2", order_id="o1", price=19.99, quantity=1),
        make_event("purchase", order_id="o2", price=5.0, quantity=2),
    ):
        profile.apply(delta_of(e))
    doc = profile.document()
    assert doc["cart"] == {"p1": 2}
    assert doc["purchase_total"] == 29.99
    assert profile.fields["purchase_micros"] == str(round(29.99 * MICROS))
    assert doc["counts_by_type"] == {"add_to_cart": 2, "purchase": 2, "remove_from_cart": 1}
    assert doc["engagement_score"] == 4 + 0 + 4 + 10 + 10


def test_duplicates_count_once():
    e = make_event(product_id="p1", category="shoes")
    profile = ReferenceProfile("u1")
    assert profile.apply(delta_of(e)) is True
    assert profile.apply(delta_of(e)) is False
    assert profile.document()["event_count"] == 1
    assert profile.document()["category_views"] == {"shoes": 1}


def test_sessions_split_on_inactivity_gap_in_event_time():
    profile = ReferenceProfile("u1")
    for ts in (0, 10 * MINUTE, 45 * MINUTE, 200 * MINUTE, 229 * MINUTE):
        profile.apply(delta_of(make_event(ts_ms=ts)))
    assert profile.document()["session_count"] == 3
    # An event bridging two sessions merges them.
    profile.apply(delta_of(make_event(ts_ms=30 * MINUTE)))
    assert profile.document()["session_count"] == 2


def test_last_products_newest_first_capped_at_ten():
    profile = ReferenceProfile("u1")
    for i in range(12):
        profile.apply(delta_of(make_event(ts_ms=i * 1000, product_id=f"p{i}")))
    profile.apply(delta_of(make_event(ts_ms=500, product_id="p11")))  # older view keeps the newest time
    assert profile.document()["last_products"] == [f"p{i}" for i in range(11, 1, -1)]


def test_identity_fields():
    profile = ReferenceProfile("u1")
    profile.apply(delta_of(make_event("identify", anonymous_id="a1")))
    profile.apply(delta_of(make_event(anonymous_id="a2")))
    doc = profile.document()
    assert doc["user_id"] == "u1"
    assert doc["anonymous_ids"] == ["a1", "a2"]


def test_any_order_and_any_duplicates_give_the_same_profiles():
    rng = random.Random(3)
    events = []
    for i in range(400):
        kind = rng.choice(["page_view", "click", "add_to_cart", "remove_from_cart", "purchase", "search"])
        meta = {"product_id": f"p{rng.randrange(15)}"}
        if kind == "purchase":
            meta.update(order_id=f"o{i}", price=rng.randrange(1, 10_000) / 100)
        if kind == "search":
            meta = {"query": "x"}
        if rng.random() < 0.5 and kind == "page_view":
            meta["category"] = rng.choice(["a", "b"])
        events.append(
            make_event(kind, ts_ms=rng.randrange(0, 600 * MINUTE), user_id=f"u{rng.randrange(4)}", **meta)
        )
    deltas = [delta_of(e, "catalog-cat") for e in events]
    expected = {k: p.document() for k, p in reference_profiles(deltas).items()}
    for _ in range(5):
        shuffled = deltas + rng.sample(deltas, 80)
        rng.shuffle(shuffled)
        assert {k: p.document() for k, p in reference_profiles(shuffled).items()} == expected
