"""The prefilter in update.lua on a real Redis never drops a rule the exact CEL evaluation fires.

Random rules (modelled and unmodelled CEL, per keys, cooldowns, caps) over random events of
stitched and single people: after each event, every rule the Python engine fires on the
person's merged profile must be among the script's candidates for that event. The fixed cases
after it show the prefilter does drop what cannot fire.
"""

from __future__ import annotations

import copy
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streaming.profiles import functions
from streaming.profiles.intent import IntentModel
from streaming.profiles.store import RedisProfileStore
from streaming.rules.checkpoint import decide_checkpoint
from streaming.rules.engine import RuleEngine, event_view
from streaming.rules.model import Action, Rule, RuleSet
from tests.unit.test_profile_reference import MINUTE, delta_of, make_event

pytestmark = pytest.mark.integration

MODEL = IntentModel(-1.0, (0.2, 0.3, 1.1, -0.5, 0.1, 0.1, 0.2), {"note": 0.0})
TYPES = ["page_view", "add_to_cart", "remove_from_cart", "purchase", "click", "identify"]
ATOMS = [
    "profile.event_count >= 2",
    "profile.event_count < 3",
    "profile.session_count >= 2",
    "profile.session_count == 1",
    "profile.purchase_total >= 10.0",
    "profile.purchase_total == 0.0",
    "profile.purchase_total > 5",
    "profile.intent_score >= 0.3",
    "profile.engagement_score > 2",
    'profile.category_views["shoes"] >= 2',
    "profile.category_views[event.category] >= 2",
    '"books" in profile.category_views',
    "event.category in profile.category_views",
    "profile.cart.size() >= 1",
    "size(profile.cart) > 1",
    '"p1" in profile.cart',
    'profile.cart["p1"] >= 2',
    'profile.counts_by_type["page_view"] >= 2',
    '"purchase" in profile.counts_by_type',
    'event.category == "shoes"',
    'event.category != ""',
    'event.event_type == "click"',
    # not modelled: unknown to the prefilter
    "profile.last_products.size() > 0",
    "event.metadata.price > 10.0",
    "profile.segments.size() == 0",
    "(profile.event_count > 2 ? true : false)",
    "profile.event_count + 1 > 3",
    'profile.user_id != ""',
]
conditions = st.recursive(
    st.sampled_from(ATOMS),
    lambda inner: st.one_of(
        st.tuples(inner, inner).map(lambda pair: f"({pair[0]} && {pair[1]})"),
        st.tuples(inner, inner).map(lambda pair: f"({pair[0]} || {pair[1]})"),
        inner.map(lambda condition: f"!({condition})"),
    ),
    max_leaves=4,
)
rules = st.lists(
    st.builds(
        lambda when, on, per, cooldown_minutes, max_fires: (when, on, per, cooldown_minutes, max_fires),
        conditions,
        st.frozensets(st.sampled_from(TYPES), max_size=2),
        st.sampled_from(["", "event.category"]),
        st.sampled_from([0, 1, 10_000]),
        st.integers(0, 2),
    ),
    min_size=1,
    max_size=5,
)
event = st.tuples(
    st.sampled_from(TYPES),
    # "u2+u1": a user id sent as another user's anonymous id; "u1+u1": as its own.
    st.sampled_from(["u1", "u2", "a1", "a2", "u1+a1", "u2+a2", "u1+a2", "u2+u1", "u1+u1"]),
    st.sampled_from(["", "shoes", "books"]),
    st.sampled_from(["p1", "p2"]),
    st.integers(0, 120),  # minutes after the previous event: sessions end after 30
    st.booleans(),  # send the previous event again (a duplicate)
    st.booleans(),  # prefiltered by a decide call after the update, not in the update call
)
events = st.lists(event, min_size=1, max_size=10)


#: Params read through CEL, and params the engine reads from the event directly.
PARAMS = (
    {"c": "event.category", "t": "event.event_type"},
    {"c": "event.category + '!'", "t": "size(event.event_id)"},
)


def store_for(client) -> RedisProfileStore:
    return RedisProfileStore(
        client, dedupe_window_seconds=3600, session_gap_ms=30 * MINUTE, intent_model=lambda: MODEL
    )


def make(event_type, who, category, product, ts_ms, ns):
    user, _, anonymous = who.partition("+")
    if user.startswith("a"):
        user, anonymous = "", user
    metadata = {"product_id": product}
    if event_type == "purchase":
        metadata.update(order_id=uuid.uuid4().hex, price=7.5, quantity=1)
    elif event_type == "identify":
        metadata = {}
        anonymous = anonymous or f"a{ts_ms % 2 + 1}"
        user = user or "u1"
    elif category:
        metadata["category"] = category
    return make_event(
        event_type,
        ts_ms=ts_ms,
        user_id=f"{ns}{user}" if user else None,
        anonymous_id=f"{ns}{anonymous}" if anonymous else None,
        **metadata,
    )


def apply_and_decide(store, engine, event, in_update=True):
    """Apply one event with the prefilter, then decide as the profile app does and as Python alone does.

    ``in_update``: the update call prefilters the event right after applying it (the usual
    path); else a decide call after the update does (events whose person changed later).
    Returns (rule numbers the script named, those it found certain to fire, those Python alone
    fires); asserts both ways give the same decisions.
    """
    delta = delta_of(event)
    writer = store.writer()
    if in_update:
        writer.send([delta], {delta.profile_id}, plan=engine.prefilter)
    else:
        writer.send([delta])
        writer.decide([delta], engine.prefilter)
    writer.confirm()
    found, sent_ms = writer.take_prefiltered()
    candidates = found.final(set() if in_update else {event.event_id})
    people = store.read_people([delta.profile_id])
    person = people.person_of[delta.profile_id]
    states = store.decision_states({person: people.members[person]})
    exact = engine.evaluate(
        people.documents[person], event_view(event, delta.category), states[person], sent_ms
    )
    prefiltered, _ = decide_checkpoint(
        engine,
        [(event, delta)],
        people.person_of,
        people.documents,
        copy.deepcopy(states),
        sent_ms,
        None,
        candidates,
    )
    assert sorted(prefiltered, key=lambda d: d["key"]) == sorted(exact, key=lambda d: d["key"])
    store.record_decisions(exact, {})
    numbers = {rule.id: n for n, rule in enumerate(engine.ruleset.rules)}
    candidate = candidates.get(event.event_id)
    named = set(candidate.rules) if candidate else set()
    certain = named - candidate.uncertain() if candidate else set()
    return named, certain, {numbers[decision["rule"]] for decision in exact}


@settings(max_examples=120, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rule_specs=rules, event_specs=events)
def test_every_rule_the_engine_fires_is_a_candidate(redis_client, rule_specs, event_specs):
    check_candidates(redis_client, rule_specs, event_specs)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rule_specs=rules, event_specs=events)
def test_conditions_compiled_to_closures_keep_every_rule_that_fires(
    redis_client, monkeypatch, rule_specs, event_specs
):
    """On a server without ``loadstring`` the prefilter compiles conditions to closures instead
    of straight-line Lua (streaming/rules/prefilter.lua, compile_source): same guarantees."""
    library = functions._UPDATE_LIBRARY
    closures_only = library.replace("local has_loadstring = nil", "local has_loadstring = false", 1)
    assert "local has_loadstring = false" in closures_only
    monkeypatch.setattr(functions, "_UPDATE_LIBRARY", closures_only)  # what every store loads
    check_candidates(redis_client, rule_specs, event_specs)


def check_candidates(redis_client, rule_specs, event_specs) -> None:
    """After every event: each rule CEL fires was named, each rule named certain fired."""
    ruleset = RuleSet(
        tuple(
            Rule(
                id=f"r{i}",
                when=when,
                action=Action(type="banner", message="m {c} {t}", params=PARAMS[i % 2]),
                on=on,
                per=per,
                cooldown_ms=cooldown * MINUTE,
                max_fires=max_fires,
            )
            for i, (when, on, per, cooldown, max_fires) in enumerate(rule_specs)
        )
    )
    engine = RuleEngine(ruleset)
    store = store_for(redis_client)
    ns = uuid.uuid4().hex  # a fresh namespace per example: a short one collides over thousands
    ts, previous = 0, None
    for event_type, who, category, product, minutes, again, decide_call in event_specs:
        ts += minutes * MINUTE
        event = (
            previous if again and previous is not None else make(event_type, who, category, product, ts, ns)
        )
        candidates, certain, fired = apply_and_decide(store, engine, event, in_update=not decide_call)
        assert fired <= candidates, (event, [ruleset.rules[n].when for n in fired - candidates])
        assert certain <= fired, (event, [ruleset.rules[n].when for n in certain - fired])
        previous = event


def one_rule(when: str, **options) -> RuleEngine:
    return RuleEngine(
        RuleSet(
            (
                Rule(
                    id="r",
                    when=when,
                    action=Action(type="banner", message="m"),
                    on=frozenset({"page_view"}),
                    **options,
                ),
            )
        )
    )


def test_a_threshold_not_reached_is_dropped_and_a_reached_one_kept(redis_client):
    engine, store, ns = (
        one_rule('profile.category_views["shoes"] >= 3'),
        store_for(redis_client),
        uuid.uuid4().hex,
    )
    seen = [
        apply_and_decide(store, engine, make("page_view", "u1", "shoes", "p1", i * MINUTE, ns))
        for i in range(4)
    ]
    assert seen == [(set(), set(), set()), (set(), set(), set()), ({0}, {0}, {0}), ({0}, {0}, {0})]


def test_a_cap_and_a_running_cooldown_drop_the_rule(redis_client):
    store, ns = store_for(redis_client), uuid.uuid4().hex
    capped = one_rule("profile.event_count >= 1", max_fires=1)
    assert [apply_and_decide(store, capped, make("page_view", "u1", "", "p1", i, ns)) for i in range(3)] == [
        ({0}, {0}, {0}),
        (set(), set(), set()),
        (set(), set(), set()),
    ]
    cooling = one_rule("profile.event_count >= 1", cooldown_ms=3_600_000)
    assert [apply_and_decide(store, cooling, make("page_view", "u2", "", "p1", i, ns)) for i in range(2)] == [
        ({0}, {0}, {0}),
        (set(), set(), set()),
    ]
    # The same event again: it already fired the rule, so it is dropped (a redelivery).
    again = one_rule("profile.event_count >= 1")
    event = make("page_view", "u3", "", "p1", 0, ns)
    assert apply_and_decide(store, again, event) == ({0}, {0}, {0})
    assert apply_and_decide(store, again, event) == (set(), set(), set())


def test_the_size_of_a_map_longer_than_one_scan_page_counts_each_entry_once(redis_client):
    """The script sizes a profile map with HSCAN MATCH: a cart of 1,200 products takes several
    pages (whose fields may repeat); the size must still be exact, as Python's."""
    store, ns = store_for(redis_client), uuid.uuid4().hex
    carts = [
        make_event("add_to_cart", ts_ms=i, user_id=f"{ns}u1", product_id=f"p{i}", quantity=1)
        for i in range(1_199)
    ]
    carts.append(make_event("remove_from_cart", ts_ms=1_199, user_id=f"{ns}u1", product_id="p0", quantity=5))
    store.apply_deltas([delta_of(event) for event in carts])
    # 1,199 products with quantity 1, one of them brought to -4: 1,198 entries above 0.
    for when, expected in (
        ("profile.cart.size() >= 1198", ({0}, {0}, {0})),
        ("profile.cart.size() >= 1199", (set(), set(), set())),
    ):
        engine = RuleEngine(
            RuleSet(
                (Rule(id="r", when=when, action=Action(type="banner", message="m"), on=frozenset({"click"})),)
            )
        )
        click = make_event("click", ts_ms=2_000, user_id=f"{ns}u1", product_id="p1")
        assert apply_and_decide(store, engine, click) == expected


def test_a_stitched_person_is_counted_over_all_its_parts(redis_client):
    engine, store, ns = (
        one_rule("profile.event_count >= 3", max_fires=1),
        store_for(redis_client),
        uuid.uuid4().hex,
    )
    assert apply_and_decide(store, engine, make("page_view", "a1", "", "p1", 0, ns)) == (set(), set(), set())
    assert (
        apply_and_decide(store, engine, make("identify", "u1+a1", "", "p1", MINUTE, ns))[0] == set()
    )  # not a page view
    # Two parts: the user's identify and the anonymous page view, now a third event.
    assert apply_and_decide(store, engine, make("page_view", "u1", "", "p1", 2 * MINUTE, ns)) == (
        {0},
        {0},
        {0},
    )
    # An anonymous event of the stitched person sees the person's fire state: capped.
    assert apply_and_decide(store, engine, make("page_view", "a1", "", "p1", 3 * MINUTE, ns)) == (
        set(),
        set(),
        set(),
    )
    # Another anonymous id, linked later, brings its own count: a new person's threshold is met at once.
    other = one_rule("profile.event_count >= 3")
    assert apply_and_decide(store, other, make("page_view", "a2", "", "p1", 0, ns)) == (set(), set(), set())
    assert apply_and_decide(store, other, make("click", "u2+a2", "", "p1", MINUTE, ns)) == (
        set(),
        set(),
        set(),
    )
    assert apply_and_decide(store, other, make("page_view", "a2", "", "p1", 2 * MINUTE, ns)) == (
        {0},
        {0},
        {0},
    )


def test_a_stitched_person_reads_each_part_once_and_sums_them_as_python(redis_client):
    """The prefetched fields of a person of several parts come from one read per part (an
    anonymous part's with its user_id check, the event's own as its update left them); their
    sums and the intent score (the first part's that has one) decide as Python does."""
    store, ns = store_for(redis_client), uuid.uuid4().hex
    engine = one_rule(
        'profile.counts_by_type["page_view"] >= 4 && profile.intent_score > 0.0 && profile.cart.size() >= 2'
    )
    for i, (event_type, who, product) in enumerate(
        [
            ("page_view", "a1", "p1"),
            ("add_to_cart", "a1", "p1"),
            ("page_view", "a2", "p2"),
            ("page_view", "a2", "p2"),
            ("identify", "u1+a1", "p1"),
            ("identify", "u1+a2", "p1"),
            ("add_to_cart", "u1+a1", "p2"),
        ]
    ):
        apply_and_decide(store, engine, make(event_type, who, "", product, i * MINUTE, ns))
    # Three parts: two page views on a2, one on a1, the fourth on the user: the rule fires;
    # a fifth on a2 fires in a decide call too (no values from an update there).
    assert apply_and_decide(store, engine, make("page_view", "u1+a1", "", "p1", 8 * MINUTE, ns)) == (
        {0},
        {0},
        {0},
    )
    again = one_rule('profile.counts_by_type["page_view"] >= 5 && profile.intent_score > 0.0')
    event = make("page_view", "a2", "", "p1", 9 * MINUTE, ns)
    assert apply_and_decide(store, again, event, in_update=False) == ({0}, {0}, {0})


def test_a_decide_call_lists_no_stitched_people(redis_client):
    """Python reads the stitched people of the update calls only: a decide call leaves them out."""
    store, ns = store_for(redis_client), uuid.uuid4().hex
    engine = one_rule("profile.event_count >= 1")
    store.apply_deltas([delta_of(make("identify", "u1+a1", "", "p1", 0, ns))])
    delta = delta_of(make("page_view", "a1", "", "p1", MINUTE, ns))
    store.apply_deltas([delta])
    functions.load_library(redis_client)

    def reply(decide_only):
        (call,) = store._script_calls(
            [delta], int(MINUTE), plan=engine.prefilter, decide_only=decide_only, watch={delta.profile_id}
        )
        return redis_client.fcall(functions.UPDATE_FUNCTION, len(call.keys), *call.keys, *call.args)

    in_update = reply(False)  # a duplicate now: not applied again, still prefiltered
    assert [event_id for event_id, _ in in_update[3]] == [delta.event_id.encode()]
    decided = reply(True)
    assert [entry[0] for entry in decided[2]] == [delta.event_id.encode()]
    assert decided[3] == []


#: A checkpoint stream: rules, events, checkpoint sizes (cycled) and the sink's send batch.
checkpoint_streams = dict(
    rule_specs=rules,
    event_specs=st.lists(event, min_size=1, max_size=16),
    cuts=st.lists(st.integers(1, 6), min_size=1, max_size=6),
    send_every=st.sampled_from([1, 2, 3, 250]),
)


@settings(
    max_examples=300,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    deadline=None,
)
@given(**checkpoint_streams)
def test_the_sink_decides_as_without_the_prefilter_over_whole_checkpoints(
    redis_client, dlq_producer, monkeypatch, rule_specs, event_specs, cuts, send_every
):
    """Checkpoints of several events, sent in batches: the same decisions with and without the prefilter.

    With it, the update script judges each event right after its own update, and the sink has
    events whose person changed later in the checkpoint (a later event of one of its parts, a
    later identity link) decided again on the people as the checkpoint left them. Without it,
    Python evaluates every event on those people. Both must fire the same rules on the same events.
    """
    assert_sink_decides_as_without_the_prefilter(
        redis_client, dlq_producer, monkeypatch, rule_specs, event_specs, cuts, send_every
    )


def assert_sink_decides_as_without_the_prefilter(
    client, dlq_producer, monkeypatch, rule_specs, event_specs, cuts, send_every
):
    """Feed the profile app's sink the events, cut into checkpoints, with and without the prefilter."""
    from streaming.profile_app import sink as sink_module
    from streaming.profile_app.pipeline import CheckedRecord

    monkeypatch.setattr(sink_module, "SEND_EVERY", send_every)
    engine = RuleEngine(
        RuleSet(
            tuple(
                Rule(
                    id=f"r{i}",
                    when=when,
                    action=Action(type="banner", message="m {c} {t}", params=PARAMS[i % 2]),
                    on=on,
                    per=per,
                    cooldown_ms=cooldown * MINUTE,
                    max_fires=max_fires,
                )
                for i, (when, on, per, cooldown, max_fires) in enumerate(rule_specs)
            )
        )
    )
    fired = {}
    for prefilter in (True, False):
        ns = uuid.uuid4().hex  # a fresh namespace per example: a short one collides over thousands
        store = store_for(client)
        recorded = []

        def record(decisions, segments, encoded=None, store=store, recorded=recorded):
            recorded.extend(decisions)
            RedisProfileStore.record_decisions(store, decisions, segments, encoded)

        store.record_decisions = record
        sink = sink_module.ProfileSink(
            store,
            dlq_producer,
            "unused",
            rules=lambda: engine,
            prefilter=prefilter,
            anonymous_part_ttl_seconds=0.0,
        )
        index_of, ts, previous = {}, 0, None
        checkpoint = iter(cuts * 20)
        left = next(checkpoint)
        for event_type, who, category, product, minutes, again, _ in event_specs:
            ts += minutes * MINUTE
            event = (
                previous
                if again and previous is not None
                else make(event_type, who, category, product, ts, ns)
            )
            index_of.setdefault(event.event_id, len(index_of))
            sink.add(CheckedRecord(b"", delta_of(event), event=event), None, 0, None, "events", 0, 0)
            previous, left = event, left - 1
            if left == 0:
                sink.flush()
                left = next(checkpoint)
        sink.flush()
        fired[prefilter] = sorted((d["rule"], index_of[d["event_id"]], d["key"]) for d in recorded)
    assert fired[True] == fired[False]
