"""update.lua on a real Redis agrees with the plain-Python reference, for any order and duplicates."""

import random
import uuid

import pytest

from streaming.profiles import functions
from streaming.profiles.codec import link_command
from streaming.profiles.identity_admin import UnlinkError
from streaming.profiles.keys import forgotten_key, owner_key, profile_keys
from streaming.profiles.reference import reference_owners, reference_person, reference_profiles
from streaming.profiles.store import RedisProfileStore
from tests.unit.test_profile_reference import MINUTE, delta_of, make_event

pytestmark = pytest.mark.integration


def store_for(client):
    return RedisProfileStore(client, dedupe_window_seconds=3600, session_gap_ms=30 * MINUTE)


def random_deltas(rng, n, users=6):
    deltas = []
    for i in range(n):
        kind = rng.choice(
            [
                "page_view",
                "page_view",
                "click",
                "add_to_cart",
                "remove_from_cart",
                "purchase",
                "search",
                "identify",
            ]
        )
        meta = {"product_id": f"p{rng.randrange(14)}"}
        user, anon = f"u{rng.randrange(users)}", None
        if kind == "purchase":
            meta.update(order_id=f"o{i}", price=rng.randrange(0, 100_000) / 100, quantity=rng.randrange(1, 4))
        elif kind == "search":
            meta = {"query": "q"}
        elif kind == "identify":
            meta, anon = {}, f"a{rng.randrange(20)}"
        elif kind == "page_view" and rng.random() < 0.5:
            meta["category"] = rng.choice(["shoes", "books", "home"])
        if kind != "identify" and rng.random() < 0.2:
            user, anon = None, f"a{rng.randrange(20)}"
        event = make_event(
            kind, ts_ms=rng.randrange(0, 900 * MINUTE), user_id=user, anonymous_id=anon, **meta
        )
        deltas.append(delta_of(event, rng.choice([None, "catalog-cat"])))
    return deltas


def redis_documents(store, profile_ids):
    docs = {}
    for pid in profile_ids:
        doc = store.get_profile(pid)
        assert doc is not None, pid
        assert doc.pop("updated_at") is not None
        docs[pid] = doc
    return docs


def expected_documents(deltas):
    docs = {}
    for pid, profile in reference_profiles(deltas, 30 * MINUTE).items():
        doc = profile.document()
        doc.pop("updated_at")
        docs[pid] = doc
    return docs


def test_redis_script_matches_reference_in_any_order_with_duplicates(redis_client):
    rng = random.Random(11)
    deltas = random_deltas(rng, 1500)
    expected = expected_documents(deltas)
    store = store_for(redis_client)
    stream = deltas + rng.sample(deltas, 300)
    rng.shuffle(stream)
    applied = 0
    for start in range(0, len(stream), 97):  # uneven batches, duplicates across and within them
        applied += store.apply_deltas(stream[start : start + 97])
    assert applied == len(deltas)
    assert redis_documents(store, expected) == expected
    # Replaying everything again changes nothing.
    assert store.apply_deltas(stream) == 0
    assert redis_documents(store, expected) == expected


def test_stitched_people_match_the_reference_through_the_streaming_writer(redis_client):
    rng = random.Random(5)
    deltas = random_deltas(rng, 1200, users=5)
    profiles, owners = reference_profiles(deltas, 30 * MINUTE), reference_owners(deltas)
    ids = sorted({*profiles, *owners, "nobody"})
    expected = {pid: reference_person(pid, profiles, owners, 30 * MINUTE) for pid in ids}
    assert any(owners.get(pid) for pid in ids)  # some anonymous ids are stitched
    store = store_for(redis_client)
    stream = deltas + rng.sample(deltas, 200)
    rng.shuffle(stream)
    writer = store.writer()
    for start in range(0, len(stream), 133):
        writer.send(stream[start : start + 133])
        if start % 3 == 0:
            writer.confirm()
    writer.confirm()
    live = store.get_people(ids)
    for doc in live.values():
        if doc is not None:
            assert doc.pop("updated_at") is not None
    for doc in expected.values():
        if doc is not None:
            doc.pop("updated_at")
    assert live == expected
    assert store.get_person("nobody") is None


def test_forgetting_a_stitched_anonymous_id_forgets_the_person(redis_client):
    store = store_for(redis_client)
    anon = delta_of(make_event(user_id=None, anonymous_id="a-f", category="shoes"))
    identify = delta_of(make_event("identify", user_id="u-f", anonymous_id="a-f"))
    other = delta_of(make_event(user_id="u-other"))
    assert store.apply_deltas([anon, identify, other]) == 3
    assert store.get_person("a-f")["event_count"] == 2
    assert store.forget("a-f") is True
    assert store.get_person("a-f") is None and store.get_person("u-f") is None
    assert store.get_person("u-other")["event_count"] == 1
    forgotten = {entry[1][b"profile_id"].decode() for entry in redis_client.xrange("pulse:forget")}
    assert forgotten == {"a-f", "u-f"}


def test_forgetting_any_id_of_merged_users_forgets_every_id_of_the_person(redis_client):
    """u-m2~u-m1 (an alias between known users) and u-m3~u-m2: one person; forget by an anonymous id."""
    store = store_for(redis_client)
    deltas = [
        delta_of(make_event(user_id="u-m1")),
        delta_of(make_event(user_id="u-m2", anonymous_id="a-m")),
        delta_of(make_event(user_id="u-m3")),
        delta_of(make_event("identify", user_id="u-m2", anonymous_id="u-m1")),
        delta_of(make_event("identify", user_id="u-m3", anonymous_id="u-m2")),
        delta_of(make_event(user_id="u-other")),
    ]
    assert store.apply_deltas(deltas) == 6
    assert store.get_person("a-m")["event_count"] == 5
    assert store.forget("a-m") is True
    assert all(store.get_person(pid) is None for pid in ("a-m", "u-m1", "u-m2", "u-m3"))
    assert store.get_person("u-other")["event_count"] == 1
    forgotten = {entry[1][b"profile_id"].decode() for entry in redis_client.xrange("pulse:forget")}
    assert forgotten == {"u-m1", "u-m2", "u-m3", "a-m"}


def test_unlink_splits_merged_users_drops_their_segments_and_keeps_decisions_where_recorded(redis_client):
    store = store_for(redis_client)
    link = delta_of(make_event("identify", user_id="u-s2", anonymous_id="u-s1"))
    deltas = [delta_of(make_event(user_id="u-s1")), delta_of(make_event(user_id="u-s2")), link]
    store.apply_deltas(deltas)
    decision = {
        "decision_id": "d1",
        "key": "k1",
        "rule": "k1",
        "profile_id": "u-s1",
        "event_id": "e1",
        "fired_at_ms": 5,
        "fire_count": 1,
        "expires_at_ms": 10**15,
    }
    store.record_decisions([decision], {"u-s1": ["vip"]})
    assert store.get_person("u-s2")["segments"] == ["vip"]
    result = store.unlink("u-s2", "u-s1")
    assert result["were_one_person"] and not result["still_one_person"]
    assert result["segments_cleared"] == ["u-s1", "u-s2"]
    one, two = store.get_person("u-s1"), store.get_person("u-s2")
    assert (one["profile_id"], one["event_count"], one["segments"]) == ("u-s1", 1, [])
    assert (two["profile_id"], two["event_count"], two["segments"]) == ("u-s2", 2, [])
    assert [d["decision_id"] for d in store.decisions_view("u-s1")["decisions"]] == ["d1"]
    assert store.decisions_view("u-s2")["decisions"] == []
    assert store.apply_deltas([link]) == 0 and store.get_person("u-s1")["profile_id"] == "u-s1"
    with pytest.raises(UnlinkError):
        store.unlink("u-s1", "u-s1")


def test_unknown_profile_is_none_and_forget_removes_it(redis_client):
    store = store_for(redis_client)
    assert store.get_profile("nobody") is None
    delta = delta_of(make_event(product_id="p1", user_id="u{x}:*"))
    assert store.apply_deltas([delta]) == 1
    assert store.get_profile("u{x}:*")["event_count"] == 1
    assert store.forget("u{x}:*") is True
    assert store.get_profile("u{x}:*") is None
    # The event_id marker survives, so a replay cannot resurrect a forgotten user.
    assert store.apply_deltas([delta]) == 0
    assert redis_client.xlen("pulse:forget") == 1


def test_keys_of_one_profile_share_a_hash_tag():
    from streaming.profiles.keys import decode_id, encode_id, fields_key

    assert decode_id(encode_id("a}b{c%7B")) == "a}b{c%7B"
    assert fields_key("a}b{c") == profile_keys("a}b{c").fields
    keys = profile_keys("a}b{c")
    tags = {
        k[k.index("{") + 1 : k.index("}")]
        for k in (*keys.state_keys, keys.decisions, keys.fires, keys.owner, keys.seen_prefix)
    }
    assert tags == {"a%7Db%7Bc"}


def test_intent_score_in_the_script_equals_the_python_model_on_the_latest_session(redis_client):
    from streaming.profiles.intent import IntentModel

    model = IntentModel(-2.0, (0.3, 0.2, 0.9, -0.4, 0.1, 0.05, 0.2), {})
    store = RedisProfileStore(
        redis_client, dedupe_window_seconds=3600, session_gap_ms=30 * MINUTE, intent_model=lambda: model
    )
    kinds = ["page_view", "page_view", "click", "add_to_cart", "search", "remove_from_cart", "add_to_cart"]
    ts = 0
    counts: dict[str, int] = {}
    start = 0
    for i, kind in enumerate(kinds * 3):
        gap = 45 * MINUTE if i == len(kinds) else 2 * MINUTE  # one new session part-way
        ts += gap
        if gap > 30 * MINUTE or i == 0:
            counts, start = {}, ts
        meta = {"product_id": "p1"} if kind != "search" else {"query": "q"}
        store.apply_deltas([delta_of(make_event(kind, ts_ms=ts, user_id="u-intent", **meta))])
        counts[kind] = counts.get(kind, 0) + 1
        expected = round(model.score(counts, (ts - start) / 60_000), 4)
        assert store.get_profile("u-intent")["intent_score"] == expected, (i, counts)
    assert 0.0 < expected < 1.0


# Ids with the characters keys.py percent-encodes: decisions.lua must build the same keys.
@pytest.mark.parametrize(("anonymous_id", "user_id"), [("a-d", "u-d"), ("a{d}%25:*", "u}d{%7B")])
def test_the_decisions_view_agrees_with_the_merged_profile_and_decision_states(
    redis_client, anonymous_id, user_id
):
    store = store_for(redis_client)
    anon = delta_of(make_event(user_id=None, anonymous_id=anonymous_id, category="shoes"))
    identify = delta_of(make_event("identify", user_id=user_id, anonymous_id=anonymous_id))
    lone = delta_of(make_event(user_id=None, anonymous_id="a-lone"))
    store.apply_deltas([anon, identify, lone])
    now = 10_000
    decision = {
        "decision_id": "d1",
        "key": "k1",
        "rule": "k1",
        "profile_id": anonymous_id,
        "event_id": "e1",
        "fired_at_ms": now - 5,
        "fire_count": 1,
        "expires_at_ms": now + 100,
    }
    expired = {
        **decision,
        "decision_id": "d2",
        "key": "k2",
        "rule": "k2",
        "profile_id": user_id,
        "expires_at_ms": now - 1,
    }
    store.record_decisions([decision, expired], {user_id: ["vip"]})
    for pid in (anonymous_id, user_id):
        view = store.decisions_view(pid, now_ms=now)
        person = store.get_person(pid)
        assert view["user_id"] == person["user_id"] == user_id
        assert view["segments"] == person["segments"] == ["vip"]
        assert [d["decision_id"] for d in view["decisions"]] == ["d1"]
        assert view["decisions"] == store.get_decisions(pid, now_ms=now)
    assert store.decisions_view("a-lone", now_ms=now)["user_id"] is None
    assert store.decisions_view("nobody") is None


def test_an_identify_naming_another_user_id_merges_the_two_users(redis_client):
    """identify(user A, anonymous B) when B is a user id: A and B are one person (canonical "u-A",
    the smaller id) with the ids B owns.

    Profiles, the decisions view (decisions.lua and the pipelined reads a cluster uses) and the
    people all agree, and every event is counted once.
    """
    store = store_for(redis_client)
    deltas = [
        delta_of(make_event("click", ts_ms=0, user_id="u-B")),
        delta_of(make_event("identify", ts_ms=1, user_id="u-A", anonymous_id="u-B")),
        delta_of(make_event("page_view", ts_ms=2, user_id="u-B", anonymous_id="a-x")),
        delta_of(make_event("page_view", ts_ms=3, user_id=None, anonymous_id="a-x")),
    ]
    store.apply_deltas(deltas)
    people = store.get_people(["u-A", "u-B", "a-x"])
    assert people["u-A"] == people["u-B"] == people["a-x"]
    assert people["u-A"]["profile_id"] == people["u-A"]["user_id"] == "u-A"
    assert people["u-A"]["event_count"] == 4
    assert people["u-A"]["anonymous_ids"] == ["a-x"]
    profiles, owners = reference_profiles(deltas), reference_owners(deltas)
    for pid in ("u-A", "u-B", "a-x"):
        want, got = reference_person(pid, profiles, owners), people[pid]
        assert {k: v for k, v in got.items() if k != "updated_at"} == {
            k: v for k, v in want.items() if k != "updated_at"
        }
    now = 10_000
    decision = {
        "decision_id": "d1",
        "key": "k1",
        "rule": "k1",
        "profile_id": "u-B",
        "event_id": "e1",
        "fired_at_ms": now - 5,
        "fire_count": 1,
        "expires_at_ms": now + 100,
    }
    store.record_decisions([decision], {"u-B": ["vip"]})
    pipelined = store_for(redis_client)
    pipelined._read_decisions = None  # the reads a Redis Cluster does instead of decisions.lua
    for reader in (store, pipelined):
        for pid in ("u-A", "u-B", "a-x"):
            view = reader.decisions_view(pid, now_ms=now)
            assert [d["decision_id"] for d in view["decisions"]] == ["d1"]
            assert (view["user_id"], view["segments"]) == ("u-A", ["vip"])
            assert view["decisions"] == reader.get_decisions(pid, now_ms=now)
    identity = store.identity_view("a-x")
    assert (identity["person_id"], identity["user_ids"]) == ("u-A", ["u-A", "u-B"])
    assert [link["ids"] for link in identity["links"]] == [["u-A", "u-B"]]
    assert identity["links"][0]["event_id"] == deltas[1].event_id


def test_refused_links_are_found_from_either_side_and_counted_while_refused(redis_client):
    """Two users naming u-r1 in one batch are both recorded on it (not only the earliest), so the
    person of u-r1 sees the link the limit refuses; the count follows the links refused now."""
    store = RedisProfileStore(
        redis_client, dedupe_window_seconds=3600, session_gap_ms=30 * MINUTE, identity_max_ids=2
    )
    deltas = [
        delta_of(make_event("click", ts_ms=0, user_id="u-r1")),
        delta_of(make_event("identify", ts_ms=1, user_id="u-r2", anonymous_id="u-r1")),
        delta_of(make_event("identify", ts_ms=2, user_id="u-r3", anonymous_id="u-r1")),
    ]
    assert store.apply_deltas(deltas) == 3  # one batch
    record = store.identity_view("u-r1")
    assert record["user_ids"] == ["u-r1", "u-r2"]
    assert [(link["ids"], link["event_id"]) for link in record["refused_links"]] == [
        (["u-r1", "u-r3"], deltas[2].event_id)
    ]
    assert store.refused_link_count() == 1
    store.identity_max_ids = 3  # a higher limit merges it at the next read: no longer counted
    assert store.get_person("u-r3")["profile_id"] == "u-r1" and store.refused_link_count() == 0
    store.identity_max_ids = 2
    assert store.get_person("u-r3")["profile_id"] == "u-r3" and store.refused_link_count() == 1
    store.unlink("u-r1", "u-r2")  # u-r1~u-r3 fits the limit now
    assert store.identity_view("u-r1")["user_ids"] == ["u-r1", "u-r3"]
    assert store.refused_link_count() == 0
    store.apply_deltas([delta_of(make_event("identify", ts_ms=3, user_id="u-r4", anonymous_id="u-r3"))])
    assert store.get_person("u-r4")["profile_id"] == "u-r4" and store.refused_link_count() == 1
    store.forget("u-r1")  # the forgotten person's refused link goes with it
    assert store.refused_link_count() == 0


def test_updates_recover_when_redis_lost_its_functions_and_scripts(redis_client):
    """A Redis restarted without persistence has lost update.lua's function library (and its
    scripts): both write paths load it again, and every delta is applied exactly once."""
    rng = random.Random(5)
    deltas = random_deltas(rng, 300)
    expected = expected_documents(deltas)
    store = store_for(redis_client)
    assert store.apply_deltas(deltas[:100]) == 100
    redis_client.function_flush()
    redis_client.script_flush()
    assert store.apply_deltas(deltas[:150]) == 50  # the pipelined path
    writer = store.writer()
    writer.send(deltas[150:200])
    assert writer.confirm() == 50
    redis_client.function_flush()
    redis_client.script_flush()
    writer.send(deltas[150:300])  # the streaming writer's path: replies read at confirm()
    assert writer.confirm() == 100
    assert redis_documents(store, expected) == expected


def test_a_server_without_functions_gets_a_clear_error(redis_client, monkeypatch):
    """Redis 6 answers FUNCTION with "unknown command": the store says which version it needs."""
    import redis as redis_module

    from streaming.profiles.functions import RedisTooOld

    def refuse(*_args, **_kwargs):
        raise redis_module.ResponseError("unknown command 'FUNCTION', with args beginning with: 'LOAD'")

    monkeypatch.setattr(redis_client, "function_load", refuse)
    with pytest.raises(RedisTooOld, match="Redis or Valkey 7.0 or newer"):
        store_for(redis_client).writer()


def test_live_documents_reads_in_chunks_and_reports_progress(redis_client):
    from assets.reconciliation import live_documents

    store = store_for(redis_client)
    store.apply_deltas([delta_of(make_event(user_id=f"u-live-{i}")) for i in range(3)])
    calls = []
    ids = ["u-live-0", "u-live-1", "u-live-2", "u-absent"]
    documents = live_documents(store, ids, lambda done, total: calls.append((done, total)), chunk=2)
    assert calls == [(2, 4), (4, 4)]
    assert documents["u-absent"] is None
    for pid in ids[:3]:
        expected = store.get_profile(pid)
        expected.pop("updated_at")
        assert documents[pid] == expected and documents[pid]["event_count"] == 1


def test_a_link_recorded_again_changes_nothing_and_an_earlier_one_still_meets_the_forget(redis_client):
    """pulse_link answers a link already recorded at that time or earlier without its checks
    (ZADD LT would change nothing): the same answers and owners as the checks give."""
    functions.load_library(redis_client)
    anonymous, user, other = (f"{uuid.uuid4().hex}{name}" for name in ("a", "u", "v"))

    def link(ts, who):
        return redis_client.execute_command(*link_command(anonymous, (ts, who)))

    assert link(100, user) == 1
    assert link(200, user) == 0  # later: kept at 100
    assert link(100, user) == 0
    assert link(50, user) == 0  # earlier: moved to 50, not added
    assert redis_client.zscore(owner_key(anonymous), user) == 50
    redis_client.fcall(functions.SUPPRESS_FUNCTION, 1, forgotten_key(anonymous), 300)
    assert link(60, user) == 0  # recorded earlier: nothing to do
    assert link(40, user) == 0  # earlier, but forgotten since: not moved
    assert link(250, other) == 0  # a new user, before the forget time: not recorded
    assert redis_client.zrange(owner_key(anonymous), 0, -1, withscores=True) == [(user.encode(), 50.0)]
    assert link(400, other) == 1  # after the forget
