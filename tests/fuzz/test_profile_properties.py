"""Property tests of the profile arithmetic: any order, any duplicates, the same profiles.

The plain-Python reference (streaming/profiles/reference.py) is the specification; the Redis
script (update.lua through RedisProfileStore) and the batch recompute (tests/reference_recompute.py)
must agree with it for every generated event sequence, with identity stitching included.
"""

from __future__ import annotations

import random
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assets.batch_sql import recompute_documents
from enrichment.catalog import Catalog
from quality.event_contract import MAX_PRICE, MAX_QUANTITY, EventContractError, validate_event
from streaming.archiver.rows import ARCHIVE_SCHEMA, archive_row, hive_partition
from streaming.profile_app.pipeline import check_record
from streaming.profiles.admission import Admission
from streaming.profiles.delta import ProfileDelta, event_category, profile_delta
from streaming.profiles.reference import reference_owners, reference_person, reference_profiles
from streaming.profiles.store import RedisProfileStore
from tests.fuzz.strategies import BASE_MS, PEOPLE, SESSION_GAP_MS, VISITORS, event_streams, to_bytes
from tests.reference_recompute import recompute_profiles

CATALOG = Catalog("fuzz", {"p1": "shoes", "p2": "books", "p:1": "a:b", "{p}": "{cat}"})
ALL_IDS = sorted({*PEOPLE, *VISITORS, "nobody"})
PURE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WITH_REDIS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def delta_of(body: dict[str, Any]) -> ProfileDelta:
    event = validate_event(body)
    return profile_delta(event, event_category(event, CATALOG.category_of(event.metadata.get("product_id"))))


def documents(deltas: list[ProfileDelta]) -> dict[str, dict[str, Any]]:
    return {pid: p.document() for pid, p in reference_profiles(deltas, SESSION_GAP_MS).items()}


def people(deltas: list[ProfileDelta], ids: list[str] = ALL_IDS) -> dict[str, dict[str, Any] | None]:
    profiles, owners = reference_profiles(deltas, SESSION_GAP_MS), reference_owners(deltas)
    return {pid: reference_person(pid, profiles, owners, SESSION_GAP_MS) for pid in ids}


def without_updated_at(doc: dict[str, Any] | None) -> dict[str, Any] | None:
    if doc is None:
        return None
    doc = dict(doc)
    doc.pop("updated_at")
    return doc


# -- the reference alone ---------------------------------------------------------------------


@PURE
@given(event_streams())
def test_reference_is_independent_of_order_and_duplicates(stream):
    events, delivered = stream
    once = [delta_of(e) for e in events]
    again = [delta_of(e) for e in delivered]
    assert documents(again) == documents(once)
    assert reference_owners(again) == reference_owners(once)
    assert people(again) == people(once)


@PURE
@given(event_streams())
def test_every_event_is_counted_exactly_once_per_part_and_per_person(stream):
    """Also when ids are reused across the pools (a user id sent as another's anonymous id)."""
    events, delivered = stream
    deltas = [delta_of(e) for e in delivered]
    docs = documents(deltas)
    per_profile = Counter(delta_of(e).profile_id for e in events)
    assert {pid: d["event_count"] for pid, d in docs.items()} == dict(per_profile)
    for doc in docs.values():
        assert sum(doc["counts_by_type"].values()) == doc["event_count"]
        assert doc["first_seen"] <= doc["last_seen"]
        assert 1 <= doc["session_count"] <= doc["event_count"]
        assert len(doc["last_products"]) == len(set(doc["last_products"])) <= 10
    # Stitching moves no event: the people's counts add up to the events, each counted once.
    owners = reference_owners(deltas)
    persons = {owners.get(pid, pid) for pid in docs}
    assert person_total(deltas, persons) == len(events)
    for pid, doc in people(deltas, ALL_IDS).items():
        assert (doc is None) == (pid not in docs and pid not in owners)


def person_total(deltas: list[ProfileDelta], persons: set[str]) -> int:
    profiles, owners = reference_profiles(deltas, SESSION_GAP_MS), reference_owners(deltas)
    return sum(reference_person(p, profiles, owners, SESSION_GAP_MS)["event_count"] for p in persons)


def test_an_id_used_as_user_and_as_anonymous_id_is_counted_in_one_person():
    """identify(user A, anonymous B) does not fold user B into A: a user id is a person of its own.

    Before, GET /v1/profiles/B returned A's person (B's events included) while GET
    /v1/profiles/x returned a person "B" holding the same events again.
    """
    bodies = [
        {"event_type": "click", "user_id": "B"},
        {"event_type": "identify", "user_id": "A", "anonymous_id": "B"},
        {"event_type": "page_view", "user_id": "B", "anonymous_id": "x"},
        {"event_type": "page_view", "anonymous_id": "x"},
    ]
    deltas = [
        delta_of(
            {"event_id": f"00000000-0000-4000-8000-00000000000{i}", "timestamp": "2024-01-01T00:00:00Z", **b}
        )
        for i, b in enumerate(bodies)
    ]
    owners = reference_owners(deltas)
    persons = {owners.get(pid, pid) for pid in reference_profiles(deltas)}
    assert person_total(deltas, persons) == len(deltas)


@st.composite
def raw_records(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[bytes]]:
    """(distinct valid events, the raw records a topic holds: duplicates, invalid ones, any order)."""
    events, delivered = draw(event_streams())
    raw = [to_bytes(e) for e in delivered]
    junk = draw(
        st.lists(
            st.sampled_from(
                [
                    b"",
                    b"{",
                    b"null",
                    b"[]",
                    b'{"event_type": "page_view"}',
                    b"\xff\xfe",
                    (
                        b'{"event_id": "x", "event_type": "click", "user_id": "u1", '
                        b'"timestamp": "2024-01-01T00:00:00Z"}'
                    ),
                ]
            )
            | events_broken(events),
            max_size=5,
        )
    )
    return events, draw(st.permutations(raw + junk))


def events_broken(events: list[dict[str, Any]]) -> st.SearchStrategy[bytes]:
    """A valid event made invalid (it must count nowhere, not even its valid event_id's twin)."""
    if not events:
        return st.nothing()
    return st.sampled_from(events).map(lambda e: to_bytes({**e, "timestamp": "not a time"}))


admissions = st.builds(Admission, st.booleans(), st.sampled_from(["opt_out", "opt_in"]))


def admitted(body: dict[str, Any], admission: Admission) -> bool:
    """The admission rule, spelled out: bots only with PULSE_BOTS_IN_PROFILES, and consent."""
    if not admission.keep_bots and body["metadata"].get("context", {}).get("bot") is True:
        return False
    granted = body.get("consent", {}).get("personalization")
    return granted if granted is not None else admission.consent == "opt_out"


@PURE
@given(raw_records(), admissions)
def test_batch_recompute_equals_the_reference_of_the_valid_events(case, admission):
    """Bots count only with PULSE_BOTS_IN_PROFILES; events without consent to personalization never."""
    events, raw = case
    counted = [e for e in events if admitted(e, admission)]
    expected = {
        pid: without_updated_at(doc) for pid, doc in documents([delta_of(e) for e in counted]).items()
    }
    assert recompute_profiles(raw, CATALOG, SESSION_GAP_MS, admission=admission) == expected


def write_archive(root: Path, raw: list[bytes], files: int, archived_twice: bool) -> None:
    """The archiver's Parquet of these records (offsets in list order), cut into ``files`` checkpoints.

    Like ParquetArchiveSink: one file per checkpoint and hour. ``archived_twice``: the first
    checkpoint is written again under another name, as after a crash before its commit.
    """
    size = max(1, -(-len(raw) // files))
    for first in range(0, len(raw), size):
        groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for offset in range(first, min(first + size, len(raw))):
            row = archive_row(raw[offset], "events", 0, offset, BASE_MS)
            groups[hive_partition(row["event_time"])].append(row)
        for (dt, hour), rows in groups.items():
            folder = root / "events" / f"dt={dt}" / f"hour={hour}"
            folder.mkdir(parents=True, exist_ok=True)
            names = [f"part-events-0-{first:012d}.parquet"] + (
                ["redelivered.parquet"] if archived_twice and first == 0 else []
            )
            for name in names:
                pq.write_table(pa.Table.from_pylist(rows, schema=ARCHIVE_SCHEMA), folder / name)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    raw_records(),
    st.integers(1, 4),
    st.booleans(),
    # forgotten ids, each at a time inside the events' 10 hours: events before and after it
    st.dictionaries(
        st.sampled_from(ALL_IDS), st.integers(BASE_MS - 60_000, BASE_MS + 600 * 60_000), max_size=2
    ),
    admissions,
)
def test_the_sql_recompute_equals_the_stream_exact_recompute(
    case, files, archived_twice, forgotten, admission
):
    """What `pulse reconcile` and profiles_batch run (DuckDB over the Parquet) == check_record +
    the reference, bots and events without consent left out or kept alike, and the forget rule's
    SQL == its Python.
    """
    _, raw = case
    with tempfile.TemporaryDirectory() as tmp:
        write_archive(Path(tmp), raw, files, archived_twice)
        sql = recompute_documents(
            Path(tmp), CATALOG.categories, SESSION_GAP_MS, forgotten=forgotten, admission=admission
        )
    assert sql == recompute_profiles(raw, CATALOG, SESSION_GAP_MS, forgotten=forgotten, admission=admission)


def test_the_sql_recompute_of_no_archive_is_empty(tmp_path):
    assert recompute_documents(tmp_path, CATALOG.categories, SESSION_GAP_MS) == {}


# -- the Redis script against the reference ---------------------------------------------------


def _store(client) -> RedisProfileStore:
    client.flushdb()
    return RedisProfileStore(client, dedupe_window_seconds=3600, session_gap_ms=SESSION_GAP_MS)


@pytest.mark.integration
@WITH_REDIS
@given(event_streams(max_size=60), st.integers(1, 25), st.randoms(use_true_random=False))
def test_redis_script_equals_the_reference(redis_client, stream, chunk, rng: random.Random):
    events, delivered = stream
    store = _store(redis_client)
    deltas = [delta_of(e) for e in delivered]
    applied = 0
    start = 0
    while start < len(deltas):  # uneven batches: duplicates fall within and across script calls
        size = rng.randint(1, chunk)
        applied += store.apply_deltas(deltas[start : start + size])
        start += size
    assert applied == len(events)
    expected = documents(deltas)
    for pid, document in expected.items():
        live_doc, want = without_updated_at(store.get_profile(pid)), without_updated_at(document)
        assert live_doc == want, {
            k: (live_doc.get(k), want.get(k)) for k in {*live_doc, *want} if live_doc.get(k) != want.get(k)
        }
    # A full replay changes nothing.
    assert store.apply_deltas(deltas) == 0


@pytest.mark.integration
@WITH_REDIS
@given(event_streams(max_size=60, visitors=VISITORS), st.integers(1, 25), st.randoms(use_true_random=False))
def test_redis_people_equal_the_reference(redis_client, stream, chunk, rng: random.Random):
    """Merged people (identity stitching) from Redis == the reference, for any order and chunking.

    Anonymous ids come from a pool that reuses user ids: an id with events as a user id is a
    person of its own, whatever links name it as an anonymous id.
    """
    _, delivered = stream
    store = _store(redis_client)
    deltas = [delta_of(e) for e in delivered]
    start = 0
    while start < len(deltas):
        size = rng.randint(1, chunk)
        store.apply_deltas(deltas[start : start + size])
        start += size
    live = {pid: without_updated_at(doc) for pid, doc in store.get_people(ALL_IDS).items()}
    want = {pid: without_updated_at(doc) for pid, doc in people(deltas, ALL_IDS).items()}
    for pid in want:
        got, exp = live.get(pid) or {}, want[pid] or {}
        assert got == exp, (
            pid,
            {k: (got.get(k), exp.get(k)) for k in {*got, *exp} if got.get(k) != exp.get(k)},
        )
    # Every distinct event is counted in exactly one person.
    persons = {doc["profile_id"]: doc["event_count"] for doc in live.values() if doc}
    assert sum(persons.values()) == len({d.event_id for d in deltas})
    # Reading again gives the same people (reads change nothing).
    assert {pid: without_updated_at(doc) for pid, doc in store.get_people(ALL_IDS).items()} == live


@pytest.mark.integration
@WITH_REDIS
@given(raw_records(), st.integers(1, 30))
def test_stream_through_the_sink_writer_equals_the_batch_recompute(redis_client, case, chunk):
    """What the profile app writes (check_record -> StreamingWriter) equals recompute_profiles of
    the same records.
    """
    _, raw = case
    store = _store(redis_client)
    writer = store.writer()
    checked = [check_record(r, CATALOG) for r in raw]
    assert all((c.delta is None) == (c.error is not None or c.skipped is not None) for c in checked)
    deltas = [c.delta for c in checked if c.delta is not None]
    for start in range(0, len(deltas), chunk):
        writer.send(deltas[start : start + chunk])
        if start // chunk % 2:
            writer.confirm()
    writer.confirm()
    batch = recompute_profiles(raw, CATALOG, SESSION_GAP_MS)
    assert {pid: without_updated_at(store.get_profile(pid)) for pid in batch} == batch
    assert all(store.get_profile(pid) is None for pid in ALL_IDS if pid not in batch)


# -- bugs found by fuzzing ---------------------------------------------------------------------


def _purchase(price: float, quantity: int = 1) -> tuple[str, dict[str, Any]]:
    return "purchase", {"order_id": "o1", "price": price, "quantity": quantity}


def _add(quantity: int) -> tuple[str, dict[str, Any]]:
    return "add_to_cart", {"product_id": "p1", "quantity": quantity}


@pytest.mark.integration
@pytest.mark.parametrize(
    "events",
    [
        [_purchase(MAX_PRICE, MAX_QUANTITY)] * 5,
        [_purchase(999_999.99, 999)] * 3,
        [_add(MAX_QUANTITY)] * 9,
    ],
    ids=["five-largest-purchases", "cents-at-the-limit", "cart-at-the-limit"],
)
def test_large_valid_amounts_keep_exact_totals(redis_client, events):
    """Found by fuzzing: amounts past 2**53 micros broke update.lua; the contract now bounds them."""
    store = _store(redis_client)
    bodies = [
        {
            "event_id": f"123e4567-e89b-12d3-a456-42661417400{i}",
            "event_type": kind,
            "user_id": "big-spender",
            "timestamp": "2024-04-25T14:23:05Z",
            "metadata": meta,
        }
        for i, (kind, meta) in enumerate(events)
    ]
    deltas = [delta_of(b) for b in bodies]
    assert store.apply_deltas(deltas) == len(deltas)
    expected = without_updated_at(documents(deltas)["big-spender"])
    assert without_updated_at(store.get_profile("big-spender")) == expected


@pytest.mark.parametrize(
    ("field", "value"), [("price", MAX_PRICE * 1.5), ("quantity", MAX_QUANTITY + 1), ("price", 1e13)]
)
def test_amounts_past_the_bounds_are_rejected_with_the_field_named(field, value):
    metadata = {"order_id": "o", "price": 1.0, field: value}
    with pytest.raises(EventContractError, match=f"metadata.{field} must be <="):
        validate_event(
            {
                "event_id": "123e4567-e89b-12d3-a456-426614174009",
                "event_type": "purchase",
                "user_id": "u",
                "timestamp": "2024-04-25T14:23:05Z",
                "metadata": metadata,
            }
        )
