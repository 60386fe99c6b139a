"""Identity beyond one level, property-tested: identify links between known user ids merge people.

Shuffled streams with duplicates, chains of links, the per-person limit (PULSE_IDENTITY_MAX_IDS)
and unlinks: the stream on real Redis (update.lua, pulse_link, the store's reads) == the
plain-Python reference (streaming/profiles/reference.py) == the DuckDB recompute over the
archive's Parquet (assets/batch_sql.py), people and identity records alike.
"""

from __future__ import annotations

import random
import tempfile
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assets.batch_sql import recompute_identity
from quality.event_contract import validate_event
from streaming.profiles.delta import ProfileDelta, event_category, profile_delta
from streaming.profiles.identity_graph import Resolution
from streaming.profiles.reference import (
    reference_identity,
    reference_owners,
    reference_person,
    reference_profiles,
)
from streaming.profiles.store import RedisProfileStore
from tests.fuzz.strategies import BASE_MS, EPOCH, MINUTE, SESSION_GAP_MS, to_bytes
from tests.fuzz.test_profile_properties import without_updated_at, write_archive

USERS = ("u1", "u2", "u3", "u4", "{u5}")
ANONYMOUS = ("a1", "a2", "a:3")
ALL_IDS = (*USERS, *ANONYMOUS)
PURE = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WITH_REDIS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@st.composite
def identity_events(draw: st.DrawFn) -> dict[str, Any]:
    """An event of few ids whose identifies often name a user id: links, chains, ties in time."""
    event_type = draw(st.sampled_from(["identify", "identify", "page_view", "click"]))
    body: dict[str, Any] = {
        "event_id": str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1)))),
        "event_type": event_type,
        # a few distinct minutes: equal times, so ties go to the event_id
        "timestamp": (EPOCH + timedelta(milliseconds=BASE_MS + draw(st.integers(0, 4)) * MINUTE)).isoformat(),
    }
    who = "both" if event_type == "identify" else draw(st.sampled_from(["user", "anon", "both"]))
    if who in ("user", "both"):
        body["user_id"] = draw(st.sampled_from(USERS))
    if who in ("anon", "both"):
        body["anonymous_id"] = draw(st.sampled_from(ALL_IDS if event_type == "identify" else ANONYMOUS))
    if event_type == "page_view":
        body["metadata"] = {"category": draw(st.sampled_from(["shoes", "books"]))}
    return body


@st.composite
def identity_streams(
    draw: st.DrawFn,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int, set[frozenset[str]]]:
    """(distinct events, delivered with duplicates in any order, max_ids, pairs to unlink)."""
    events = draw(st.lists(identity_events(), min_size=1, max_size=30, unique_by=lambda e: e["event_id"]))
    duplicates = draw(st.lists(st.sampled_from(events), max_size=len(events)))
    delivered = draw(st.permutations(events + duplicates))
    pairs = sorted(
        {
            frozenset((e["user_id"], e["anonymous_id"]))
            for e in events
            if e.get("user_id") and e.get("anonymous_id")
        }
        - {frozenset((e["user_id"],)) for e in events if e.get("user_id")},
        key=sorted,
    )
    unlinked = set(draw(st.lists(st.sampled_from(pairs), max_size=2))) if pairs else set()
    return events, delivered, draw(st.integers(1, 4)), unlinked


def delta_of(body: dict[str, Any]) -> ProfileDelta:
    event = validate_event(body)
    return profile_delta(event, event_category(event, None))


def people(
    deltas: list[ProfileDelta], max_ids: int, unlinked: set[frozenset[str]]
) -> dict[str, dict[str, Any] | None]:
    profiles = reference_profiles(deltas, SESSION_GAP_MS)
    owners = reference_owners(deltas, max_ids, unlinked)
    return {
        pid: without_updated_at(reference_person(pid, profiles, owners, SESSION_GAP_MS)) for pid in ALL_IDS
    }


def identity_of(resolution: Resolution, pid: str) -> tuple[str, list[str], list[tuple], list[tuple]]:
    """(person, user ids, merged links, refused links) of an id, as the identity endpoint lists them."""
    person = resolution.person_of.get(pid, pid)
    users = resolution.user_ids.get(person, [])
    links = [link for link in resolution.links if link.a in users or link.b in users]
    return (
        person,
        users,
        [(link.a, link.b, link.event_id) for link in links if link.merged],
        [(link.a, link.b, link.event_id) for link in links if not link.merged],
    )


# -- the reference alone ---------------------------------------------------------------------


@PURE
@given(identity_streams())
def test_people_do_not_depend_on_order_duplicates_or_chunking(stream):
    events, delivered, max_ids, unlinked = stream
    once, again = [delta_of(e) for e in events], [delta_of(e) for e in delivered]
    assert reference_identity(again, max_ids, unlinked) == reference_identity(once, max_ids, unlinked)
    assert people(again, max_ids, unlinked) == people(once, max_ids, unlinked)


@PURE
@given(identity_streams())
def test_people_respect_the_limit_and_count_every_event_once(stream):
    events, delivered, max_ids, unlinked = stream
    deltas = [delta_of(e) for e in delivered]
    resolution = reference_identity(deltas, max_ids, unlinked)
    for person, users in resolution.user_ids.items():
        assert 1 <= len(users) <= max_ids
        assert person == min(users)  # the canonical id
        assert all(resolution.person_of[u] == person for u in users)
    for link in resolution.links:
        same = resolution.person_of[link.a] == resolution.person_of[link.b]
        assert same if link.merged else not same  # a refused link joins nobody
        assert frozenset((link.a, link.b)) not in unlinked
    # Every distinct event lies in exactly one person.
    persons = {resolution.person_of.get(d.profile_id, d.profile_id) for d in deltas}
    profiles = reference_profiles(deltas, SESSION_GAP_MS)
    owners = reference_owners(deltas, max_ids, unlinked)
    total = sum(reference_person(p, profiles, owners, SESSION_GAP_MS)["event_count"] for p in persons)
    assert total == len(events)


def _identify(i: int, user: str, other: str, minute: int) -> dict[str, Any]:
    return {
        "event_id": f"00000000-0000-4000-8000-{i:012d}",
        "event_type": "identify",
        "user_id": user,
        "anonymous_id": other,
        "timestamp": f"2024-01-01T00:{minute:02d}:00Z",
    }


def _click(i: int, user: str) -> dict[str, Any]:
    return {
        "event_id": f"00000000-0000-4000-9000-{i:012d}",
        "event_type": "click",
        "user_id": user,
        "timestamp": "2024-01-01T01:00:00Z",
    }


def test_a_chain_of_links_is_one_person_and_the_limit_refuses_the_latest_link():
    """B~A at minute 1, C~B at 2, D~C at 3: one person "A"; with at most 3 ids the latest link is refused."""
    bodies = [_click(i, u) for i, u in enumerate("ABCD")] + [
        _identify(1, "B", "A", 1),
        _identify(2, "C", "B", 2),
        _identify(3, "D", "C", 3),
    ]
    deltas = [delta_of(b) for b in reversed(bodies)]
    merged = reference_identity(deltas, 100)
    assert merged.person_of == dict.fromkeys("ABCD", "A")
    limited = reference_identity(deltas, 3)
    assert limited.person_of == {"A": "A", "B": "A", "C": "A", "D": "D"}
    assert [(link.a, link.b, link.merged) for link in limited.links] == [
        ("A", "B", True),
        ("B", "C", True),
        ("C", "D", False),
    ]
    # Unlinking B~C splits the chain in two people (and D joins C under the limit now).
    split = reference_identity(deltas, 3, {frozenset("BC")})
    assert split.person_of == {"A": "A", "B": "A", "C": "C", "D": "C"}


def test_an_identify_naming_an_unknown_id_stays_an_anonymous_link():
    """Only an id with events as a user id is a user: else the identify stitches an anonymous id."""
    deltas = [delta_of(b) for b in (_click(0, "A"), _identify(1, "A", "visitor", 1))]
    resolution = reference_identity(deltas)
    assert resolution.person_of == {"A": "A", "visitor": "A"}
    assert resolution.links == []


# -- DuckDB over the archive == the reference -------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(identity_streams(), st.integers(1, 3))
def test_the_sql_identity_recompute_equals_the_reference(stream, files):
    events, delivered, max_ids, unlinked = stream
    with tempfile.TemporaryDirectory() as tmp:
        write_archive(Path(tmp), [to_bytes(e) for e in delivered], files, archived_twice=files > 1)
        sql = recompute_identity(Path(tmp), max_ids, unlinked)
    expected = reference_identity([delta_of(e) for e in events], max_ids, unlinked)
    assert sql == expected


# -- the stream on real Redis == the reference ------------------------------------------------


def _apply(store: RedisProfileStore, deltas: list[ProfileDelta], chunk: int, rng: random.Random) -> None:
    start = 0
    while start < len(deltas):
        size = rng.randint(1, chunk)
        if rng.random() < 0.5:
            store.apply_deltas(deltas[start : start + size])
        else:  # the profile app's path: calls sent at once, confirmed later
            writer = store.writer()
            writer.send(deltas[start : start + size])
            writer.confirm()
        start += size


@pytest.mark.integration
@WITH_REDIS
@given(identity_streams(), st.integers(1, 12), st.floats(0, 1), st.randoms(use_true_random=False))
def test_redis_people_and_identity_records_equal_the_reference(redis_client, stream, chunk, split, rng):
    """Unlinks happen part-way through the delivery; a full redelivery afterwards changes nothing."""
    _, delivered, max_ids, unlinked = stream
    redis_client.flushdb()
    store = RedisProfileStore(
        redis_client, dedupe_window_seconds=3600, session_gap_ms=SESSION_GAP_MS, identity_max_ids=max_ids
    )
    deltas = [delta_of(e) for e in delivered]
    cut = int(len(deltas) * split)
    _apply(store, deltas[:cut], chunk, rng)
    for pair in sorted(unlinked, key=sorted):
        store.unlink(*sorted(pair))
    _apply(store, deltas[cut:], chunk, rng)
    want = people(deltas, max_ids, unlinked)
    resolution = reference_identity(deltas, max_ids, unlinked)

    def check() -> None:
        live = {pid: without_updated_at(doc) for pid, doc in store.get_people(list(ALL_IDS)).items()}
        for pid in ALL_IDS:
            got, exp = live[pid] or {}, want[pid] or {}
            assert got == exp, (
                pid,
                {k: (got.get(k), exp.get(k)) for k in {*got, *exp} if got.get(k) != exp.get(k)},
            )
        for pid in ALL_IDS:
            view = store.identity_view(pid)
            if want[pid] is None:
                assert view is None
                continue
            person, users, merged, refused = identity_of(resolution, pid)
            assert (view["person_id"], view["user_ids"]) == (person, users)
            assert [(*link["ids"], link["event_id"]) for link in view["links"]] == merged
            assert [(*link["ids"], link["event_id"]) for link in view["refused_links"]] == refused

    check()
    store.apply_deltas(deltas)  # the linking events again: an unlinked pair stays apart
    check()
    assert store.refused_link_count() == len(
        {(link.a, link.b) for link in resolution.links if not link.merged}
    )
