"""The profile store, reconciliation and the running apps on a real 3-master Redis Cluster."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import redis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings

from assets.reconciliation import live_profile_ids
from core.redis_client import RedisClient, is_cluster_url, primaries, redis_from_url
from core.settings import PulseSettings
from enrichment.catalog import SAMPLE_CATALOG, Catalog, categories_from_rows, read_catalog_csv
from enrichment.reference_store import CATALOG, publish_reference
from orchestration.demo_traffic import TrafficGenerator
from orchestration.local_services import start_redis_cluster
from streaming.profiles.cluster import ClusterTopologyChanged
from streaming.profiles.keys import profile_keys, profile_slot
from streaming.profiles.reference import reference_owners, reference_person, reference_profiles
from streaming.profiles.store import RedisProfileStore
from tests.integration.helpers import (
    SHIPPED_TRAITS,
    comparable,
    ground_truth,
    post_batches,
    wait_for_profiles,
)
from tests.integration.test_personalization import event, wait_for
from tests.integration.test_profile_store import expected_documents, random_deltas, redis_documents
from tests.integration.test_rules_prefilter import (
    assert_sink_decides_as_without_the_prefilter,
    checkpoint_streams,
)
from tests.unit.test_profile_reference import MINUTE, delta_of, make_event

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GAP_MS = 30 * MINUTE


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real 3-master cluster of the embedded Valkey, for this module."""
    procs, url = start_redis_cluster(tmp_path_factory.mktemp("redis-cluster"))
    yield url
    for proc in procs:
        proc.stop()


@pytest.fixture
def cluster(cluster_url: str) -> Iterator[RedisClient]:
    client = redis_from_url(cluster_url, socket_timeout=10)
    for node in primaries(client):
        node.flushall()
    yield client
    client.close()


def store_on(client: RedisClient) -> RedisProfileStore:
    return RedisProfileStore(
        client, dedupe_window_seconds=3600, session_gap_ms=GAP_MS, traits=lambda: SHIPPED_TRAITS
    )


def apply(store: RedisProfileStore, stream, how: str, batch: int) -> int:
    """Apply ``stream`` in uneven batches through apply_deltas or a StreamingWriter."""
    applied = 0
    if how == "apply_deltas":
        for start in range(0, len(stream), batch):
            applied += store.apply_deltas(stream[start : start + batch])
        return applied
    writer = store.writer()
    for i, start in enumerate(range(0, len(stream), batch)):
        writer.send(stream[start : start + batch])
        if i % 3 == 0:
            applied += writer.confirm()
    return applied + writer.confirm()


def test_the_url_chooses_the_client_and_slots_are_computed_like_the_server(cluster, cluster_url):
    assert is_cluster_url(cluster_url) and isinstance(cluster, redis.RedisCluster)
    assert isinstance(redis_from_url("redis://127.0.0.1:1/0"), redis.Redis)
    assert len(primaries(cluster)) == 3
    for pid in ("u1", "a}b{c", "ünï", "x" * 200):
        assert (
            profile_slot(pid)
            == cluster.keyslot(profile_keys(pid).fields)
            == cluster.keyslot(profile_keys(pid).owner)
        )


@pytest.mark.parametrize("how", ["apply_deltas", "writer"])
def test_lua_equals_the_reference_on_a_cluster_in_any_order_with_duplicates(cluster, how):
    rng = random.Random(11)
    deltas = random_deltas(rng, 1500, users=30)
    expected = expected_documents(deltas)
    store = store_on(cluster)
    stream = deltas + rng.sample(deltas, 300)
    rng.shuffle(stream)
    assert apply(store, stream, how, 97) == len(deltas)
    assert redis_documents(store, expected) == expected
    assert apply(store, stream, how, 500) == 0  # a replay changes nothing
    assert redis_documents(store, expected) == expected
    # Profiles really are spread: every master holds some.
    assert all(node.dbsize() > 0 for node in primaries(cluster))


@pytest.mark.parametrize("how", ["apply_deltas", "writer"])
def test_stitched_people_equal_the_reference_on_a_cluster(cluster, how):
    rng = random.Random(5)
    deltas = random_deltas(rng, 1200, users=9)
    profiles, owners = reference_profiles(deltas, GAP_MS), reference_owners(deltas)
    ids = sorted({*profiles, *owners, "nobody"})
    expected = {pid: reference_person(pid, profiles, owners, GAP_MS) for pid in ids}
    for doc in expected.values():
        if doc is not None:
            doc.pop("updated_at")
    assert any(owners.get(pid) for pid in ids)
    # Users and the anonymous ids they own live on different masters.
    assert len({cluster.nodes_manager.get_node_from_slot(profile_slot(pid)).name for pid in ids}) == 3
    store = store_on(cluster)
    stream = deltas + rng.sample(deltas, 200)
    rng.shuffle(stream)
    apply(store, stream, how, 133)
    live = store.get_people(ids)
    for doc in live.values():
        if doc is not None:
            assert doc.pop("updated_at") is not None
    assert live == expected
    assert store.get_person("nobody") is None


def test_one_script_call_spans_several_slots_of_one_master(cluster):
    store = store_on(cluster)
    writer = store.writer()
    deltas = [delta_of(make_event(user_id=f"u{i}")) for i in range(60)]
    writer.send(deltas)
    calls = [(node, call) for _, call, node, _ in writer._sent if call is not None]
    assert len(calls) == 3  # one per master, not one per slot
    for node, call in calls:
        assert not call.keys  # undeclared: declared keys must share a slot
        slots = {profile_slot(pid) for pid in call.ids}
        assert len(slots) > 1
        assert {cluster.nodes_manager.get_node_from_slot(s).name for s in slots} == {node.name}
    assert writer.confirm() == 60


def test_reports_decisions_and_forget_route_per_key(cluster):
    store = store_on(cluster)
    anon = delta_of(make_event(user_id=None, anonymous_id="a-d", category="shoes"))
    identify = delta_of(make_event("identify", user_id="u-d", anonymous_id="a-d"))
    lone = delta_of(make_event(user_id=None, anonymous_id="a-lone"))
    writer = store.writer()
    writer.send([anon, identify, lone], watch={"a-d", "u-d"})
    assert writer.confirm() == 3
    reports = writer.take_reports()
    assert reports["a-d"].owner == "u-d" and reports["u-d"].part.anonymous_ids == {"a-d"}
    assert store.read_reports(["a-d", "u-d"]) == reports
    now = 10_000
    decision = {
        "decision_id": "d1",
        "key": "k1",
        "rule": "k1",
        "profile_id": "a-d",
        "event_id": "e1",
        "fired_at_ms": now - 5,
        "fire_count": 1,
        "expires_at_ms": now + 100,
    }
    store.record_decisions([decision], {"u-d": ["vip"]})
    for pid in ("a-d", "u-d"):
        view = store.decisions_view(pid, now_ms=now)
        assert view["user_id"] == "u-d" and view["segments"] == ["vip"]
        assert [d["decision_id"] for d in view["decisions"]] == ["d1"]
        assert view["decisions"] == store.get_decisions(pid, now_ms=now)
    assert store.decisions_view("a-lone", now_ms=now)["user_id"] is None
    assert store.forget("a-d") is True
    assert store.get_person("a-d") is None and store.get_person("u-d") is None
    assert store.get_person("a-lone")["event_count"] == 1
    assert {entry[1][b"profile_id"].decode() for entry in cluster.xrange("pulse:forget")} == {"a-d", "u-d"}
    assert store.apply_deltas([anon, identify]) == 0  # markers outlive the forget


def test_live_profile_ids_scans_every_master(cluster):
    deltas = [delta_of(make_event(user_id=f"user-{i}")) for i in range(300)]
    deltas += [delta_of(make_event(user_id=None, anonymous_id="a{weird}%id"))]
    store_on(cluster).apply_deltas(deltas)
    assert set(live_profile_ids(cluster)) == {d.profile_id for d in deltas}


class SlotMigration:
    """Moves one (empty) slot to another master the way resharding does: IMPORTING/MIGRATING, then NODE."""

    def __init__(self, cluster: redis.RedisCluster, slot: int) -> None:
        self.slot = slot
        self.source = cluster.nodes_manager.get_node_from_slot(slot)
        self.target = next(n for n in cluster.get_primaries() if n.name != self.source.name)
        self.admin = {n.name: redis.Redis(host=n.host, port=n.port) for n in cluster.get_primaries()}
        self.ids = {n.name: self.admin[n.name].cluster("myid") for n in (self.source, self.target)}

    def begin(self) -> None:
        self._setslot(self.target.name, "IMPORTING", self.ids[self.source.name])
        self._setslot(self.source.name, "MIGRATING", self.ids[self.target.name])

    def finish(self) -> None:
        others = [n for n in self.admin if n not in (self.source.name, self.target.name)]
        for name in [self.target.name, self.source.name, *others]:  # the target first: it bumps its epoch
            self._setslot(name, "NODE", self.ids[self.target.name])
        for client in self.admin.values():
            client.close()

    def _setslot(self, name: str, *args) -> None:
        self.admin[name].execute_command("CLUSTER", "SETSLOT", self.slot, *args)


def test_a_slot_moving_under_a_batch_fails_it_and_the_retry_goes_to_the_new_master(cluster):
    """Mid-migration (ASK) and after it (MOVED): the writer raises, re-reads the slot map, and a
    resend lands.
    """
    store = store_on(cluster)
    pid = "u-moving"
    migration = SlotMigration(cluster, profile_slot(pid))
    first = delta_of(make_event(user_id=pid))
    writer = store.writer()
    migration.begin()
    writer.send([first, delta_of(make_event(user_id="u-elsewhere", anonymous_id="a-elsewhere"))])
    with pytest.raises(ClusterTopologyChanged):
        writer.confirm()
    migration.finish()
    writer.send([first])  # the map is re-read first
    assert writer.confirm() == 1
    assert cluster.nodes_manager.get_node_from_slot(migration.slot).name == migration.target.name
    assert store.get_profile(pid)["event_count"] == 1
    # A client that still has the old map gets a redirection, then lands after re-reading it.
    source = migration.source
    stale = store_on(redis_from_url(f"redis+cluster://{source.host}:{source.port}/0"))
    stale.client.nodes_manager.slots_cache[migration.slot] = [stale.client.get_node(source.host, source.port)]
    again = stale.writer()
    again.send([first, delta_of(make_event(user_id=pid, anonymous_id="a-moving"))])
    with pytest.raises(ClusterTopologyChanged):
        again.confirm()
    again.send([first, delta_of(make_event(user_id=pid, ts_ms=5))])
    assert again.confirm() == 1


def test_the_sink_retries_a_checkpoint_whose_slots_moved(cluster):
    from confluent_kafka import Producer
    from quixstreams.sinks import SinkBackpressureError

    from streaming.profile_app.pipeline import CheckedRecord
    from streaming.profile_app.sink import ProfileSink

    store = store_on(cluster)
    sink = ProfileSink(store, Producer({"bootstrap.servers": "127.0.0.1:9"}), "unused-dlq")
    pid = "u-sink-moving"
    migration = SlotMigration(cluster, profile_slot(pid))
    batch = [delta_of(make_event(user_id=pid, ts_ms=i)) for i in range(3)] + [
        delta_of(make_event(user_id="u-calm"))
    ]

    def checkpoint() -> None:
        for offset, delta in enumerate(batch):
            sink.add(
                CheckedRecord(b"{}", delta=delta), delta.profile_id.encode(), 0, None, "events", 0, offset
            )
        sink.flush()

    migration.begin()
    with pytest.raises(SinkBackpressureError):  # Quix pauses, then redelivers from the committed offset
        checkpoint()
    migration.finish()
    checkpoint()
    assert store.get_profile(pid)["event_count"] == 3 and store.get_profile("u-calm")["event_count"] == 1


@pytest.fixture
def settings(settings: PulseSettings, cluster_url: str) -> PulseSettings:
    """The shared settings (fresh topics, one embedded broker) with Redis on the cluster."""
    return settings.model_copy(update={"redis_url": cluster_url})


RULES = """
rules:
  - id: category_affinity
    on: [page_view]
    when: 'event.category in profile.category_views && profile.category_views[event.category] >= 3'
    per: event.category
    action: {type: banner, message: "New in {category}", params: {category: event.category}}
"""


def test_the_apps_run_on_the_cluster_with_exact_profiles(settings, pulse_apps, cluster, tmp_path: Path):
    rows = read_catalog_csv(SAMPLE_CATALOG)
    catalog = Catalog(publish_reference(cluster, CATALOG, rows, "product_id"), categories_from_rows(rows))
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(RULES)
    settings.rules_file = rules_file
    pulse_apps("profile-app")
    pulse_apps("api")
    base = f"http://{settings.api_host}:{settings.api_port}"

    events = list(TrafficGenerator(catalog.categories, users=200, seed=7).events(4000))
    events[10:10] = [dict(events[3]), dict(events[3])]
    acknowledged = post_batches(base, "test-write", events, batch_size=200)
    acknowledged += post_batches(base, "test-write", events[:300], batch_size=300)  # a client retry
    # Identity stitching and a rule that fires, across masters.
    anon, user = f"a-{uuid.uuid4().hex[:6]}", f"u-{uuid.uuid4().hex[:6]}"
    t0 = datetime.now(UTC) - timedelta(minutes=10)
    stitched = [
        event("page_view", t0, anon=anon, category="shoes", product_id="p1"),
        event("identify", t0 + timedelta(minutes=1), user=user, anon=anon),
        event("page_view", t0 + timedelta(minutes=2), anon=anon, category="shoes", product_id="p2"),
        event("page_view", t0 + timedelta(minutes=3), user=user, category="shoes", product_id="p3"),
    ]
    for one in stitched:
        acknowledged += post_batches(base, "test-write", [one])

    expected = ground_truth(acknowledged, catalog, settings.session_timeout_seconds * 1000)
    store = store_on(cluster)
    assert wait_for_profiles(store, expected, timeout=90) == expected
    assert set(live_profile_ids(cluster)) == set(expected)
    assert all(node.dbsize() > 0 for node in primaries(cluster))

    read = httpx.Client(base_url=base, headers={"X-Pulse-Key": "test-read"}, timeout=30)
    some = sorted(pid for pid in expected if pid not in (anon, user))[0]
    profile = read.get(f"/v1/profiles/{some}")
    assert profile.status_code == 200 and comparable(profile.json()) == comparable(store.get_person(some))
    merged = read.get(f"/v1/profiles/{anon}").json()
    assert merged["user_id"] == user and merged["event_count"] == 4 and merged["anonymous_ids"] == [anon]
    decisions = wait_for(
        lambda: read.get(f"/v1/decisions/{anon}").json(),
        lambda d: any(x["rule"] == "category_affinity" for x in d.get("decisions", [])),
    )
    assert decisions["user_id"] == user
    assert [d["rule"] for d in decisions["decisions"]] == ["category_affinity"]
    assert read.get(f"/v1/decisions/{user}").json()["decisions"] == decisions["decisions"]
    assert read.get("/v1/decisions/nobody-at-all").status_code == 404
    health = httpx.get(f"{base}/healthz", timeout=10)
    assert health.status_code == 200 and health.json()["redis"] is True


@hypothesis_settings(
    max_examples=60,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    deadline=None,
)
@given(**checkpoint_streams)
def test_the_sink_decides_as_without_the_prefilter_on_a_cluster(
    cluster,
    dlq_producer,
    monkeypatch,
    rule_specs,
    event_specs,
    cuts,
    send_every,  # noqa: F811 - the fixture
):
    """As on one server: the people's parts live on different masters, links go to other nodes."""
    assert_sink_decides_as_without_the_prefilter(
        cluster, dlq_producer, monkeypatch, rule_specs, event_specs, cuts, send_every
    )


def test_a_rebuild_wipe_reaches_every_key_of_a_part_on_a_cluster(cluster):
    """Parts on several masters: markers found by SCAN on every master, and by the SCAN inside the
    script (the last resort) on the part's own master; nothing of the parts but their identity links is
    left, others untouched."""
    from streaming.profiles.rebuild_wipe import PartWiper

    rng = random.Random(4)
    deltas = random_deltas(rng, 300, users=12)
    store = store_on(cluster)
    assert apply(store, deltas, "apply_deltas", 100) == len(deltas)
    ids = sorted({d.profile_id for d in deltas})
    wiped, kept = ids[:6], ids[6:]

    def part_keys(pid: str) -> list[bytes]:
        return [k for node in primaries(cluster) for k in node.keys(f"pulse:{{{pid}}}:*")]

    markers = sum(len([k for k in part_keys(pid) if b":seen:" in k]) for pid in wiped)
    summary = PartWiper(cluster).wipe(wiped[:3])

    class AlwaysBusy(PartWiper):
        def _versions(self, ids):  # as if the stream updated each part every round
            return {pid: "changed" for pid in ids}

    last_resort = AlwaysBusy(cluster).wipe(wiped[3:])
    assert last_resort.scanned_in_script == 3
    assert summary.markers_deleted + last_resort.markers_deleted == markers > 0
    # Identity links stay (each event re-applied adds its link again, idempotently).
    assert all({k.rsplit(b":", 1)[1] for k in part_keys(pid)} <= {b"owner", b"rebuild"} for pid in wiped)
    PartWiper(cluster).restore(wiped)
    assert all(not [k for k in part_keys(pid) if not k.endswith(b":owner")] for pid in wiped)
    assert all(part_keys(pid) for pid in kept)
