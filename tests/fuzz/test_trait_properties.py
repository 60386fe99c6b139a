"""Property tests of computed traits: stream (real Redis) = Python reference = DuckDB SQL.

Every kind, windowed and not, with ``where`` conditions over mixed JSON types, for shuffled
streams with duplicates, events across UTC midnights and at equal times (ties by event_id),
including the built-in ``traits``, ``interests``, ``counts_7d`` and ``counts_30d``. All engines
read at one fixed ``NOW``; decayed values agree to the 3 decimals shown, within 0.001.
"""

from __future__ import annotations

import json
import math
import random
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assets.batch_sql import recompute_documents
from core.time_format import iso_from_ms
from enrichment.catalog import Catalog
from quality.event_contract import validate_event
from streaming.profiles.delta import ProfileDelta, event_category, profile_delta
from streaming.profiles.reference import reference_owners, reference_person, reference_profiles
from streaming.profiles.store import RedisProfileStore
from streaming.traits.definition import DAY_MS
from streaming.traits.loader import parse_traits
from tests.fuzz.strategies import request_contexts
from tests.fuzz.test_profile_properties import write_archive
from tests.reference_recompute import recompute_profiles

TRAITS = parse_traits(
    """
traits:
  views:          {kind: count, on: [page_view]}
  shoe_views_7d:
    kind: count
    on: [page_view]
    where: 'event.category == "shoes" || event.metadata.category == "hats"'
    window: 7d
  spend:          {kind: sum, on: [purchase], field: metadata.price}
  spend_3d:       {kind: sum, on: [purchase], field: metadata.price, window: 3d}
  cheapest:       {kind: min, on: [purchase, add_to_cart], field: metadata.price}
  priciest_2d:    {kind: max, on: [purchase], field: metadata.price, window: 2d}
  first_ref:      {kind: first, on: [page_view, click], field: metadata.referrer}
  last_plan:      {kind: last, on: [identify], field: metadata.traits.plan}
  last_plan_1d:   {kind: last, on: [identify], field: metadata.traits.plan, window: 1d}
  big_spender:
    kind: count
    on: [purchase]
    where: 'event.metadata.price >= 50.5 && !(event.metadata.currency == "JPY")'
  ref_g:
    kind: count
    on: [page_view, click]
    where: 'has(event.metadata.referrer) && event.metadata.referrer.startsWith("https://g")'
  not_five:       {kind: count, on: [click], where: 'event.metadata.referrer != 5'}
  shoe_interest:  {kind: decayed, on: [page_view], where: 'event.category == "shoes"', half_life: 2d}
  clicks_decay:   {kind: decayed, on: [click], half_life: 0.5d, window: 3d}
  first_query:    {kind: first, on: [search], field: metadata.query, window: 5d}
  lowest_level:   {kind: min, on: [level_up], field: metadata.level}
  user_named:     {kind: last, on: [level_up, click], where: 'event.user_id == "u1"', field: event_type}
""",
    interest_half_life_days=1.5,
)
#: A fixed read and processing time: 2026-03-10T09:30:00Z.
NOW = 1_773_135_000_000
TODAY = NOW // DAY_MS
CATALOG = Catalog("traits", {"p1": "shoes", "p2": "books"})
USERS = ("u1", "u2", "u3")
VISITORS = ("a1", "a2")
DECAYED = {"interests", "shoe_interest", "clicks_decay"}

ANY_JSON = (
    st.none()
    | st.booleans()
    | st.integers(-10, 10)
    | st.sampled_from(["https://g.com", "https://b.com", "g"])
)
PLAN = st.sampled_from(["free", "pro"]) | st.none() | st.integers(0, 3) | st.just({"tier": 1})


@st.composite
def times(draw: st.DrawFn) -> int:
    """Event times over the last 40 days, often right at a UTC midnight, sometimes equal."""
    day = TODAY - draw(st.integers(-1, 3) | st.integers(-1, 40))
    within = draw(st.sampled_from([0, 1, DAY_MS - 1, 12 * 3_600_000]) | st.integers(0, DAY_MS - 1))
    return day * DAY_MS + within


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(
        st.sampled_from(["page_view", "purchase", "add_to_cart", "identify", "search", "click", "level_up"])
    )
    user = draw(st.sampled_from(USERS))
    body: dict[str, Any] = {
        "event_id": str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1)), version=4)),
        "event_type": kind,
        "timestamp": iso_from_ms(draw(times())),
    }
    ids = draw(st.sampled_from(["user", "anonymous", "both"])) if kind != "identify" else "user"
    if ids in ("user", "both"):
        body["user_id"] = user
    if ids in ("anonymous", "both") or (kind == "identify" and draw(st.booleans())):
        body["anonymous_id"] = draw(st.sampled_from(VISITORS))
    meta: dict[str, Any] = {}
    if kind == "page_view":
        choice = draw(st.sampled_from(["shoes", "hats", "books", None, "p1", "p2"]))
        if choice in ("p1", "p2"):
            meta["product_id"] = choice
        elif choice:
            meta["category"] = choice
    if kind in ("page_view", "click") and draw(st.booleans()):
        meta["referrer"] = draw(ANY_JSON)
    if kind in ("purchase", "add_to_cart"):
        meta["product_id"] = draw(st.sampled_from(["p1", "p2"]))
        if kind == "purchase" or draw(st.booleans()):
            meta["price"] = draw(st.integers(0, 200) | st.floats(0, 200).map(lambda x: round(x, 2)))
        if kind == "purchase":
            meta["order_id"] = "o1"
            if draw(st.integers(0, 3)):
                meta["currency"] = draw(st.sampled_from(["JPY", "EUR"]))
    if kind == "identify" and draw(st.booleans()):
        meta["traits"] = draw(st.dictionaries(st.sampled_from(["plan", "age", "name"]), PLAN, max_size=3))
    if kind == "search":
        meta["query"] = draw(st.sampled_from(["boots", "hats", "b"]))
    if kind == "level_up" and draw(st.booleans()):
        meta["level"] = draw(ANY_JSON)
    if draw(st.integers(0, 2)) == 0:
        meta["context"] = draw(request_contexts)  # last_geo, first_campaign...; bots left out
    if meta:
        body["metadata"] = meta
    return body


@st.composite
def streams(draw: st.DrawFn, max_size: int = 40) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(distinct events, delivered: with duplicates, shuffled)."""
    distinct = draw(st.lists(events(), max_size=max_size, unique_by=lambda e: e["event_id"]))
    same_time = draw(st.booleans())
    if same_time and len(distinct) > 1:  # ties: equal event times, decided by event_id
        for e in distinct[: len(distinct) // 2]:
            e["timestamp"] = distinct[0]["timestamp"]
    duplicates = draw(st.lists(st.sampled_from(distinct), max_size=10)) if distinct else []
    return distinct, draw(st.permutations(distinct + duplicates))


def delta_of(body: dict[str, Any]) -> ProfileDelta:
    event = validate_event(body)
    category = event_category(event, CATALOG.category_of(event.metadata.get("product_id")))
    return profile_delta(event, category, TRAITS, NOW)


def trait_view(document: dict[str, Any] | None) -> dict[str, Any] | None:
    if document is None:
        return None
    fields = ("traits", "interests", "counts_7d", "counts_30d", "computed", "event_count")
    return {k: document[k] for k in fields}


def assert_same(got: dict[str, Any] | None, want: dict[str, Any] | None) -> None:
    """Equal, except decayed values within 0.001 (their log-sums may differ in the last bits)."""
    assert (got is None) == (want is None), (got, want)
    if got is None or want is None:
        return
    got, want = dict(got), dict(want)
    for name in ("interests",):
        _close(got.pop(name), want.pop(name), name)
    got_computed, want_computed = dict(got.pop("computed")), dict(want.pop("computed"))
    for name in DECAYED:
        a, b = got_computed.pop(name, None), want_computed.pop(name, None)
        _close({"": a} if a is not None else {}, {"": b} if b is not None else {}, name)
    assert got_computed == want_computed
    assert got == want


def _close(a: dict[str, float], b: dict[str, float], name: str) -> None:
    keys = set(a) | set(b)
    for key in keys:  # a value rounding to 0 is omitted on one side only at the 0.0005 edge
        x, y = a.get(key, 0.0), b.get(key, 0.0)
        assert math.isclose(x, y, abs_tol=0.0011), (name, key, x, y)


def reference_documents(deltas: list[ProfileDelta]) -> dict[str, dict[str, Any]]:
    return {pid: trait_view(p.document(TRAITS, NOW)) for pid, p in reference_profiles(deltas).items()}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.randoms(use_true_random=False))
def test_the_reference_depends_only_on_the_set_of_events(case, rng: random.Random):
    distinct, delivered = case
    once = reference_documents([delta_of(e) for e in distinct])
    shuffled = list(delivered)
    rng.shuffle(shuffled)
    again = reference_documents([delta_of(e) for e in shuffled])
    assert set(once) == set(again)
    for pid in once:
        assert_same(again[pid], once[pid])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
def test_the_sql_recompute_equals_the_reference(case):
    _, delivered = case
    raw = [json.dumps(e).encode() for e in delivered]
    want = recompute_profiles(raw, CATALOG, 1_800_000, traits=TRAITS, now_ms=NOW)
    with tempfile.TemporaryDirectory() as tmp:
        write_archive(Path(tmp), raw, 2, False)
        got = recompute_documents(Path(tmp), CATALOG.categories, 1_800_000, traits=TRAITS, now_ms=NOW)
    assert set(got) == set(want)
    for pid in want:
        assert_same(trait_view(got[pid]), trait_view(want[pid]))
        # Everything else of the profile is unchanged by the traits.
        rest = {k: v for k, v in got[pid].items() if k not in ("interests", "computed")}
        assert rest == {k: v for k, v in want[pid].items() if k not in ("interests", "computed")}


def _store(client) -> RedisProfileStore:
    client.flushdb()
    return RedisProfileStore(
        client, dedupe_window_seconds=3600, session_gap_ms=1_800_000, traits=lambda: TRAITS
    )


@pytest.mark.integration
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(streams(), st.integers(1, 15), st.randoms(use_true_random=False))
def test_redis_equals_the_reference_per_part_and_per_person(redis_client, case, chunk, rng: random.Random):
    distinct, delivered = case
    store = _store(redis_client)
    deltas = [delta_of(e) for e in delivered]
    start = 0
    while start < len(deltas):  # uneven batches: duplicates within and across calls
        size = rng.randint(1, chunk)
        store.apply_deltas(deltas[start : start + size])
        start += size
    want = reference_documents(deltas)
    live = store.get_profiles(list(want), NOW)
    for pid, document in want.items():
        assert_same(trait_view(live[pid]), document)
    ids = [*USERS, *VISITORS]
    profiles, owners = reference_profiles(deltas), reference_owners(deltas)
    people = store.get_people(ids, NOW)
    for pid in ids:
        expected = reference_person(pid, profiles, owners, 1_800_000, TRAITS, NOW)
        assert_same(trait_view(people[pid]), trait_view(expected))
    assert store.apply_deltas(deltas) == 0  # a replay changes nothing


def test_windows_count_whole_utc_days_including_today():
    def at(ms: int, n: int) -> dict[str, Any]:
        return {
            "event_id": str(uuid.UUID(int=n, version=4)),
            "event_type": "page_view",
            "user_id": "u1",
            "timestamp": iso_from_ms(ms),
            "metadata": {"category": "shoes"},
        }

    start_of_window = (TODAY - 6) * DAY_MS
    bodies = [at(start_of_window, 1), at(start_of_window - 1, 2), at(NOW, 3), at((TODAY + 1) * DAY_MS, 4)]
    document = reference_profiles([delta_of(b) for b in bodies])["u1"].document(TRAITS, NOW)
    assert document["counts_7d"] == {"page_view": 2}  # the first day of the window and today
    assert document["counts_30d"] == {"page_view": 3}
    assert document["computed"]["shoe_views_7d"] == 2
    # interests: each view counts 0.5^(age / 1.5 days); the future one more than 1.
    ages = [NOW - start_of_window, NOW - start_of_window + 1, 0, NOW - (TODAY + 1) * DAY_MS]
    assert document["interests"] == {"shoes": round(sum(0.5 ** (a / (1.5 * DAY_MS)) for a in ages), 3)}


def test_last_and_first_break_ties_by_the_larger_event_id():
    def identify(event_id: int, plan: str) -> dict[str, Any]:
        return {
            "event_id": str(uuid.UUID(int=event_id, version=4)),
            "event_type": "identify",
            "user_id": "u1",
            "timestamp": iso_from_ms(NOW - 1000),
            "metadata": {"traits": {"plan": plan}},
        }

    for order in ([identify(1, "free"), identify(2, "pro")], [identify(2, "pro"), identify(1, "free")]):
        document = reference_profiles([delta_of(b) for b in order])["u1"].document(TRAITS, NOW)
        assert document["traits"] == {"plan": "pro"}
        assert document["computed"]["last_plan"] == "pro"


@st.composite
def arrivals_over_months(draw: st.DrawFn) -> list[tuple[int, dict[str, Any]]]:
    """(processing time, event) of one person over 90 days: events arrive up to two days late, some twice."""
    out = []
    spread = random.Random(draw(st.integers(0, 2**32)))  # hypothesis's own draws cluster on few days
    for _ in range(draw(st.integers(1, 150) | st.integers(60, 150))):
        body = draw(events())
        body["user_id"] = "u1"
        body.pop("anonymous_id", None)
        ts = (TODAY - 90) * DAY_MS + spread.randrange(90 * DAY_MS)
        body["timestamp"] = iso_from_ms(ts)
        out.append((ts + draw(st.integers(0, 2 * DAY_MS)), body))
    out += draw(st.lists(st.sampled_from(out), max_size=5)) if out else []
    return sorted(out, key=lambda pair: pair[0])


@pytest.mark.integration
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(arrivals_over_months())
def test_windows_stay_exact_and_bounded_as_days_pass(redis_client, arrivals):
    """Cells of days that left the window are dropped as time passes; what is read stays exact."""
    store = _store(redis_client)
    deltas = []
    for processed_at, body in arrivals:
        event = validate_event(body)
        category = event_category(event, CATALOG.category_of(event.metadata.get("product_id")))
        delta = profile_delta(event, category, TRAITS, processed_at)
        deltas.append(delta)
        store.apply_deltas([delta])
    end = arrivals[-1][0] if arrivals else NOW
    want = {pid: trait_view(p.document(TRAITS, end)) for pid, p in reference_profiles(deltas).items()}
    live = store.get_profiles(list(want), end)
    for pid, document in want.items():
        assert_same(trait_view(live[pid]), document)
    # Bounded: after each event of a windowed trait, the cells span at most the longest window
    # (plus the two days an event may arrive late); nothing else adds cells.
    windows = {t.storage_id: TRAITS.longest_window_days for t in TRAITS.all if t.window_days}
    for pid in want:
        fields = {k.decode(): v for k, v in redis_client.hgetall(f"pulse:{{{pid}}}:p").items()}
        days_kept = {
            (name.split(":")[1], int(name.split(":")[2]))
            for name in fields
            if name.startswith("x") and name.split(":")[1] in windows
        }
        for sid, window in windows.items():
            assert len({d for s, d in days_kept if s == sid}) <= window + 2, (sid, sorted(days_kept))
