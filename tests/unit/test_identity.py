"""Identity stitching: anonymous activity counts on the user exactly once, in any arrival order."""

import random

from streaming.profiles.codec import identity_links
from streaming.profiles.identity import merge_sessions
from streaming.profiles.reference import reference_owners, reference_person, reference_profiles
from tests.unit.test_profile_reference import MINUTE, delta_of, make_event

GAP = 30 * MINUTE


def person(deltas, profile_id):
    return reference_person(profile_id, reference_profiles(deltas, GAP), reference_owners(deltas), GAP)


def browse_then_identify():
    before = [
        delta_of(make_event("page_view", ts_ms=i * MINUTE, user_id=None, anonymous_id="a1", category="shoes"))
        for i in range(3)
    ]
    identify = delta_of(make_event("identify", ts_ms=5 * MINUTE, user_id="u1", anonymous_id="a1"))
    after = [
        delta_of(
            make_event("add_to_cart", ts_ms=6 * MINUTE, user_id="u1", anonymous_id="a1", product_id="p9")
        ),
        delta_of(
            make_event("page_view", ts_ms=7 * MINUTE, user_id=None, anonymous_id="a1", category="shoes")
        ),
    ]
    return before + [identify] + after


def test_anonymous_events_before_and_after_identify_count_on_the_user_once():
    deltas = browse_then_identify()
    doc = person(deltas, "u1")
    assert doc["user_id"] == "u1"
    assert doc["event_count"] == 6
    assert doc["category_views"] == {"shoes": 4}
    assert doc["cart"] == {"p9": 1}
    assert doc["anonymous_ids"] == ["a1"]
    assert doc["session_count"] == 1
    # The person spans its anonymous part's first view and its user part's last event.
    assert doc["first_seen"] == "2023-11-14T22:13:20.000Z"  # the first anonymous page view (minute 0)
    assert doc["last_seen"] == "2023-11-14T22:20:20.000Z"  # the anonymous page view after identify (minute 7)
    assert doc["counts_by_type"] == {"page_view": 4, "identify": 1, "add_to_cart": 1}
    # The anonymous id returns the same merged profile.
    assert person(deltas, "a1") == doc


def test_merge_is_independent_of_arrival_order_and_duplicates():
    deltas = browse_then_identify()
    expected = person(deltas, "a1")
    rng = random.Random(3)
    for _ in range(20):
        stream = deltas + rng.sample(deltas, 3)
        rng.shuffle(stream)
        assert person(stream, "a1") == expected


def test_an_unlinked_anonymous_visitor_has_its_own_profile():
    deltas = [delta_of(make_event("page_view", user_id=None, anonymous_id="a7", category="books"))]
    doc = person(deltas, "a7")
    assert doc["user_id"] is None and doc["anonymous_ids"] == ["a7"] and doc["event_count"] == 1
    assert person(deltas, "nobody") is None


def test_a_shared_device_belongs_to_the_earliest_linked_user_whatever_the_order():
    anon_view = delta_of(
        make_event("page_view", ts_ms=MINUTE, user_id=None, anonymous_id="a1", category="home")
    )
    late = delta_of(make_event("identify", ts_ms=9 * MINUTE, user_id="u-late", anonymous_id="a1"))
    early = delta_of(make_event("identify", ts_ms=2 * MINUTE, user_id="u-early", anonymous_id="a1"))
    for stream in ([anon_view, late, early], [early, anon_view, late], [late, early, anon_view]):
        assert person(stream, "a1")["user_id"] == "u-early"
        assert person(stream, "u-early")["event_count"] == 2  # its identify + the anonymous view
        assert person(stream, "u-late")["event_count"] == 1  # only its own identify


def test_sessions_of_parts_merge_across_the_gap():
    assert merge_sessions([(0, 10), (100, 120), (15, 30)], gap_ms=5) == [(0, 30), (100, 120)]
    assert merge_sessions([(0, 10), (16, 20)], gap_ms=5) == [(0, 10), (16, 20)]


def test_the_rules_view_of_a_person_equals_the_full_document_field_by_field():
    from streaming.profiles.identity import merge_parts, merged_view
    from streaming.profiles.reference import reference_owners, reference_profiles
    from tests.integration.test_profile_store import random_deltas

    deltas = random_deltas(random.Random(8), 600, users=4)
    profiles, owners = reference_profiles(deltas, GAP), reference_owners(deltas)
    names = {
        "last_session",
        "event_count",
        "counts_by_type",
        "category_views",
        "cart",
        "purchase_total",
        "engagement_score",
        "intent_score",
        "session_count",
        "first_seen",
        "last_seen",
        "updated_at",
        "last_products",
        "anonymous_ids",
    }
    for person in {owners.get(pid, pid) for pid in profiles}:
        owned = sorted(a for a, u in owners.items() if u == person and a != person)
        parts = [profiles[pid].part() for pid in [person, *owned] if pid in profiles]
        user_id = (
            person if (profiles.get(person) and profiles[person].fields.get("user_id")) or owned else None
        )
        full = merge_parts(person, user_id, parts, GAP)
        view = merged_view(person, user_id, parts, GAP, names)
        assert view == {k: full[k] for k in view}, person
        assert set(view) == names | {"profile_id", "user_id", "segments"}


def test_a_batch_links_every_user_seen_with_an_id_at_its_earliest_time():
    """Not only the earliest user: the others may link users, or own the id after an unlink."""
    deltas = [
        delta_of(make_event("identify", ts_ms=5 * MINUTE, user_id="u1", anonymous_id="a1")),
        delta_of(make_event("identify", ts_ms=5 * MINUTE, user_id="u2", anonymous_id="a1")),
        delta_of(make_event("click", ts_ms=3 * MINUTE, user_id="u2", anonymous_id="a1")),
        delta_of(make_event("click", ts_ms=4 * MINUTE, user_id="u2", anonymous_id="a1")),
        delta_of(make_event("click", ts_ms=1 * MINUTE, user_id="u3")),
    ]
    earliest_u2, earliest_u1 = deltas[2].timestamp_ms, deltas[0].timestamp_ms
    assert identity_links(deltas) == [("a1", (earliest_u2, "u2")), ("a1", (earliest_u1, "u1"))]
