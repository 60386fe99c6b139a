"""The rules prefilter compiler (pure): which CEL it models exactly and what it leaves unknown."""

import msgspec
import pytest

from streaming.rules.cel_subset import parse
from streaming.rules.checkpoint import decide_checkpoint
from streaming.rules.engine import RuleEngine
from streaming.rules.follower import DEFAULT_RULES_FILE
from streaming.rules.loader import load_rules, parse_rules
from streaming.rules.model import Action, Rule
from streaming.rules.prefilter import (
    UNKNOWN,
    Candidate,
    Prefilter,
    add_candidates,
    certain_fires,
    compile_condition,
    guard,
    state_key_plan,
)
from tests.unit.test_profile_reference import delta_of, make_event

SAMPLE = {rule.id: rule for rule in load_rules(DEFAULT_RULES_FILE).rules}


def rule(when: str, rule_id: str = "r", on: frozenset[str] = frozenset({"page_view"}), per: str = "") -> Rule:
    return Rule(id=rule_id, when=when, action=Action(type="banner", message="x"), on=on, per=per)


def test_the_sample_rules_compile_to_exact_plans():
    assert compile_condition(SAMPLE["category_affinity"].when) == [
        "and",
        ["and", ["cmp", "!=", ["e", "category"], ["k", ""]], ["in", "v", ["e", "category"], False]],
        ["cmp", ">=", ["m", "v", ["e", "category"], False], ["k", 3]],
    ]
    assert compile_condition(SAMPLE["cart_saver"].when)[1][1] == ["cmp", ">", ["size", "c", True], ["k", 0]]
    assert compile_condition(SAMPLE["big_spender"].when) == [
        "cmp",
        ">=",
        ["n", "purchase_micros", 1_000_000],
        ["k", 500.0],
    ]
    assert compile_condition(SAMPLE["high_intent"].when)[2] == ["not", ["in", "t", ["k", "purchase"], False]]
    assert state_key_plan(SAMPLE["category_affinity"]) == [1, "category"]
    assert state_key_plan(SAMPLE["big_spender"]) == [0]


@pytest.mark.parametrize(
    "expression",
    [
        "profile.event_count > 2 ? true : false",  # ternary
        "event.metadata.price > 10.0",  # metadata is not in the delta
        "profile.last_products.size() > 0",  # not a counter map
        "size(profile.cart, 1) > 0",
        "profile.cart.size(1) > 0",
        'size("ab") > 1',
        'event.category < "m"',  # string ordering
        'profile.event_count == "3"',  # different kinds
        "profile.event_count + 1 > 3",  # arithmetic on profile values
        "9223372036854775807 + 1 > 0",  # int overflow is a CEL error
        "9223372036854775808 > 0",  # out of range literal
        "profile.event_count < 9007199254740993",  # not exact as a Lua number
        "1u > 0",  # uint literal
        "0x10 > 0",
        '"a\\nb" == event.category',  # escapes other than quotes and backslash
        'r"raw" == event.category',
        "event.user_id == 'u1'",  # the delta's user id is not the event's
        "now > 3",
        "profile.event_count",  # not a boolean
        "1 < 2 < 3",
        "profile.event_count >= 3 &&",  # does not parse
        "has(profile.cart)",
    ],
)
def test_what_is_not_modelled_is_unknown(expression):
    plan = compile_condition(expression)
    assert plan == UNKNOWN or "?" in str(plan), plan


def test_unknown_parts_stay_inside_a_known_structure():
    assert compile_condition("profile.event_count >= 3 && event.metadata.x == 1") == [
        "and",
        ["cmp", ">=", ["n", "event_count", 1], ["k", 3]],
        ["?"],
    ]
    assert compile_condition("!(profile.last_products.size() > 0)") == ["not", ["?"]]


def test_precedence_and_constant_folding_follow_cel():
    assert parse("a || b && c") == ("bin", "||", ("id", "a"), ("bin", "&&", ("id", "b"), ("id", "c")))
    assert parse("!a == b") == ("bin", "==", ("un", "!", ("id", "a")), ("id", "b"))
    fold = lambda text: compile_condition(f"profile.event_count >= {text}")[3]  # noqa: E731
    assert fold("4 * 25") == ["k", 100]
    assert fold("-7 / 2") == ["k", -3]  # truncation toward zero
    assert fold("-7 % 2") == ["k", -1]
    assert fold("2.0 * 300.0") == ["k", 600.0]
    assert fold("-(3)") == ["k", -3]
    assert compile_condition("profile.event_count >= 1 / 0") == UNKNOWN
    assert compile_condition("profile.event_count >= 1 * 2.0") == UNKNOWN  # no int * double in CEL


def test_numbers_of_either_kind_compare_as_cel_compares_them():
    assert compile_condition("profile.purchase_total >= 500") == [
        "cmp",
        ">=",
        ["n", "purchase_micros", 1_000_000],
        ["k", 500],
    ]
    assert compile_condition('profile.category_views["x"] == 3.0')[0] == "cmp"


def test_guards_index_rules_by_an_event_field():
    assert guard(compile_condition('event.category == "shoes" && profile.event_count > 1')) == (
        "category",
        "shoes",
    )
    assert guard(compile_condition('profile.event_count > 1 && "shoes" == event.category')) == (
        "category",
        "shoes",
    )
    assert guard(compile_condition('event.category == "shoes" || profile.event_count > 1')) is None
    assert guard(compile_condition("profile.event_count > 1")) is None


def test_the_script_argument_carries_every_type_and_the_rules_for_any_type():
    rules = [
        rule('event.category == "a" && profile.event_count > 1', "guarded"),
        rule(
            "profile.cart.size() > 0 || profile.event_count > 1", "typed", frozenset({"page_view", "click"})
        ),
        rule("profile.event_count > 5", "every_type", frozenset()),
    ]
    prefilter = Prefilter(rules)
    assert prefilter.argument() is prefilter.argument()  # encoded once: the script keeps it decoded
    argument = msgspec.msgpack.decode(prefilter.argument())
    assert set(argument["types"]) == {"page_view", "click"}
    assert [plan[1] for plan in argument["types"]["click"]["all"]] == ["typed"]
    assert [entry[2][1] for _, entries in argument["any"]["tiers"] for entry in entries] == ["every_type"]
    page_view = argument["types"]["page_view"]
    guarded = page_view["by"]["category"]["a"]
    assert [plan[1] for plan in guarded["rules"]] == ["guarded"]
    assert (guarded["fields"], guarded["keyed"]) == (["event_count"], [])
    assert page_view["fields"] == ["event_count"]
    number, rule_id, _, key, max_fires, cooldown, certain = page_view["all"][0]
    assert (number, rule_id, key, max_fires, cooldown, certain) == (1, "typed", [0], 0, 0, True)


def test_thresholds_on_one_number_form_a_tier_in_ascending_order():
    rules = [
        rule("profile.event_count >= 50 && profile.session_count >= 2", "fifty"),
        rule("profile.event_count > 25", "over_25"),
        rule("25 <= profile.event_count", "from_25"),
        rule('profile.counts_by_type["search"] >= 3', "searches"),
        rule("profile.event_count >= profile.engagement_score", "not_a_tier"),
    ]
    plan = msgspec.msgpack.decode(Prefilter(rules).argument())["types"]["page_view"]
    tiers = {
        tuple(map(str, msgspec.json.decode(node))): [(bound, strict, p[1]) for bound, strict, p in entries]
        for node, entries in plan["tiers"]
    }
    assert tiers[("n", "event_count", "1")] == [
        (25, False, "from_25"),
        (25, True, "over_25"),
        (50, False, "fifty"),
    ]
    assert tiers[("m", "t", "['k', 'search']", "False")] == [(3, False, "searches")]
    assert [p[1] for p in plan["all"]] == ["not_a_tier"]


def test_the_fields_a_type_reads_are_listed_for_one_read():
    rules = [
        rule(
            'profile.category_views[event.category] >= 3 && "buy" in profile.counts_by_type && '
            "profile.session_count > 1"
        )
    ]
    plan = msgspec.msgpack.decode(Prefilter(rules).argument())["types"]["page_view"]
    assert plan["fields"] == ["ss", "t:buy"]
    assert plan["keyed"] == [["v", "category"]]


def test_a_guarded_group_lists_its_own_fields_so_an_event_reads_only_its_groups():
    rules = [
        rule('event.category == "shoes" && profile.category_views["shoes"] >= 3', "shoes"),
        rule(
            'event.category == "books" && profile.category_views["books"] >= 3 && profile.session_count > 1',
            "books",
        ),
        rule("profile.event_count >= 10", "ten"),
    ]
    plan = msgspec.msgpack.decode(Prefilter(rules).argument())["types"]["page_view"]
    assert plan["fields"] == ["event_count"]
    assert plan["by"]["category"]["shoes"]["fields"] == ["v:shoes"]
    assert plan["by"]["category"]["books"]["fields"] == ["ss", "v:books"]


def test_per_keys_other_than_an_event_field_skip_the_state_check():
    assert state_key_plan(rule("true", per="event.category")) == [1, "category"]
    assert state_key_plan(rule("true", per="event.metadata.sku")) == [2]
    assert state_key_plan(rule("true", per="event.product_id")) == [2]


def test_only_rules_whose_decision_needs_no_profile_may_be_decided_by_the_script():
    assert certain_fires(SAMPLE["category_affinity"])  # params read the event only
    assert not certain_fires(SAMPLE["big_spender"])  # a segment reads the profile's segments
    profile_param = Rule(
        id="r", when="true", action=Action(type="banner", message="{n}", params={"n": "profile.event_count"})
    )
    assert not certain_fires(profile_param)
    assert not certain_fires(rule("true", per="event.metadata.sku"))


def test_candidates_decode_and_the_uncertain_answer_wins_for_a_repeated_event():
    found = {}
    add_candidates(found, [[b"e1", [0, 1, 2, 3, 0, 0], b"u1", b""]])
    assert found["e1"] == Candidate("u1", None, {0: (True, 2), 3: (False, 0)})
    assert found["e1"].uncertain() == {3}
    add_candidates(found, [[b"e1", [0, 0, 2], b"u1", b"u1"]])
    assert found["e1"].rules[0] == (False, 2) and found["e1"].uncertain() == {0, 3}


def certain_engine():
    return RuleEngine(parse_rules(AFFINITY_ONCE))


AFFINITY_ONCE = """
rules:
  - id: affinity
    on: [page_view]
    when: 'profile.category_views[event.category] >= 3'
    per: event.category
    action: {type: banner, message: "More {category}", params: {category: event.category}}
    cooldown: 1h
    max_fires: 2
"""


def test_a_certain_rule_becomes_the_decision_python_would_make():
    engine = certain_engine()
    event = make_event("page_view", user_id="u1", category="shoes")
    delta = delta_of(event)
    full_profile = {"profile_id": "u1", "user_id": "u1", "category_views": {"shoes": 3}, "segments": []}
    exact, _ = decide_checkpoint(
        engine, [(event, delta)], {"u1": "u1"}, {"u1": full_profile}, {"u1": {}}, 1000
    )
    certain = {event.event_id: Candidate("u1", "u1", {0: (True, 0)})}
    decided, _ = decide_checkpoint(engine, [(event, delta)], {}, {}, {}, 1000, None, certain)
    assert (
        decided == exact and decided[0]["message"] == "More shoes" and decided[0]["key"] == "affinity:shoes"
    )
    # The person's earlier fires count: this is the second, and the cap is two.
    (second,) = decide_checkpoint(
        engine,
        [(event, delta)],
        {},
        {},
        {},
        1000,
        None,
        {event.event_id: Candidate("u1", "u1", {0: (True, 1)})},
    )[0]
    assert second["fire_count"] == 2


def test_within_a_checkpoint_a_certain_rule_still_respects_its_cooldown():
    engine = certain_engine()
    events = [make_event("page_view", ts_ms=i, user_id="u1", category="shoes") for i in range(3)]
    candidates = {e.event_id: Candidate("u1", "u1", {0: (True, 0)}) for e in events}
    fired, _ = decide_checkpoint(
        engine, [(e, delta_of(e)) for e in events], {}, {}, {}, 1000, None, candidates
    )
    assert len(fired) == 1 and fired[0]["event_id"] == events[0].event_id  # the earliest in event time


def test_an_uncertain_rule_is_evaluated_on_the_profile_and_unnamed_rules_not_at_all():
    engine = RuleEngine(
        parse_rules(
            AFFINITY_ONCE
            + """
  - id: anything
    on: [page_view]
    when: 'true'
    action: {type: banner, message: "x"}
"""
        )
    )
    event = make_event("page_view", user_id="u1", category="shoes")
    full_profile = {"profile_id": "u1", "user_id": "u1", "category_views": {"shoes": 3}, "segments": []}
    only_affinity = {event.event_id: Candidate("u1", "u1", {0: (False, 0)})}
    fired, _ = decide_checkpoint(
        engine,
        [(event, delta_of(event))],
        {"u1": "u1"},
        {"u1": full_profile},
        {"u1": {}},
        1000,
        None,
        only_affinity,
    )
    assert [d["rule"] for d in fired] == ["affinity"]


def _delta(profile_id: str, linked_anonymous_id: str = ""):
    from streaming.profiles.delta import ProfileDelta

    user_id = profile_id if linked_anonymous_id else ""
    return ProfileDelta(profile_id, "e", "page_view", 0, user_id, linked_anonymous_id, "", "")


def test_update_order_finds_events_whose_person_changed_after_their_update():
    from streaming.rules.checkpoint import UpdateOrder

    order = UpdateOrder()
    first = order.add(_delta("u1"))
    other = order.add(_delta("a1"))
    assert not order.changed_after(["u1"], first)
    order.add(_delta("u1"))  # a later event of the same profile
    assert order.changed_after(["u1"], first)
    assert order.changed_after(["a1", "u1"], other)  # a stitched person: any of its parts
    assert not order.changed_after(["a1"], other)
    order.batch_sent()
    linked = order.add(_delta("u2", linked_anonymous_id="a2"))  # links go before the updates of their batch
    assert not order.changed_after(["u2"], linked)
    assert not order.changed_after(["a1"], other)
    assert not order.linked_since_last_update("a1")
    order.add(_delta("u3", linked_anonymous_id="a1"))  # a1 linked to u3 in a later batch than a1's update
    assert order.changed_after(["a1"], other) and order.linked_since_last_update("a1")
    assert not order.linked_since_last_update("u2")


def test_on_a_cluster_a_link_of_the_same_batch_counts_as_later():
    from streaming.rules.checkpoint import UpdateOrder

    order = UpdateOrder(cluster=True)
    place = order.add(_delta("a1"))
    order.add(_delta("u1", linked_anonymous_id="a1"))  # goes to a1's node, maybe after a1's update
    assert order.changed_after(["a1"], place) and order.linked_since_last_update("a1")


@pytest.mark.parametrize("cluster", [False, True])
def test_profile_changed_after_is_changed_after_for_one_profile(cluster):
    """The sink's per-event check (one profile, no loop) answers as ``changed_after`` does, and
    ``updated_later`` as it does event by event, over random sequences of updates, links and
    sent batches."""
    import random

    from streaming.rules.checkpoint import UpdateOrder

    ids = ["u1", "u2", "a1", "a2"]
    for seed in range(200):
        rng = random.Random(seed)
        order = UpdateOrder(cluster=cluster)
        places, deltas = [], []
        for _ in range(rng.randint(1, 12)):
            if rng.random() < 0.25:
                order.batch_sent()
            user = rng.choice(["u1", "u2"])
            anonymous = rng.choice(["", "a1", "a2"])
            profile = user if anonymous or rng.random() < 0.5 else rng.choice(ids)
            deltas.append(_delta(profile, linked_anonymous_id=anonymous if profile == user else ""))
            places.append(order.add(deltas[-1]))
        for place in places:
            for pid in ids:
                assert order.profile_changed_after(pid, place) == order.changed_after([pid], place), (
                    seed,
                    pid,
                )
        # The sink's loop over a checkpoint's triggering events answers as the per-event check.
        one_by_one = [
            d for d, at in zip(deltas, places, strict=True) if order.profile_changed_after(d.profile_id, at)
        ]
        assert order.updated_later([(None, d) for d in deltas], places) == one_by_one, seed
