"""Rules: loading (all or nothing), CEL evaluation, cooldowns, caps, runtime errors, reload."""

import os
import time
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streaming.rules.checkpoint import decide_checkpoint
from streaming.rules.engine import DECISION_NAMESPACE, RuleEngine, decision_id
from streaming.rules.follower import DEFAULT_RULES_FILE, RulesFollower
from streaming.rules.loader import RuleFileError, load_rules, parse_duration_ms, parse_rules
from tests.unit.test_profile_reference import delta_of, make_event

AFFINITY = """
rules:
  - id: category_affinity
    on: [page_view]
    when: 'event.category in profile.category_views && profile.category_views[event.category] >= 3'
    per: event.category
    action: {type: banner, message: "More {category}", params: {category: event.category}}
    cooldown: 1h
    max_fires: 2
"""
HOUR = 3_600_000


def profile(**views):
    return {"profile_id": "u1", "user_id": "u1", "category_views": views, "segments": []}


def view(category, event_id="e1"):
    return {
        "event_id": event_id,
        "event_type": "page_view",
        "category": category,
        "metadata": {},
        "timestamp": "t",
    }


def test_the_shipped_rule_file_is_valid_and_has_category_affinity():
    ruleset = load_rules(DEFAULT_RULES_FILE)
    assert "category_affinity" in {rule.id for rule in ruleset.rules}


def test_category_affinity_fires_at_three_views_naming_the_category():
    engine = RuleEngine(parse_rules(AFFINITY))
    assert engine.evaluate(profile(shoes=2), view("shoes"), {}, 0) == []
    (decision,) = engine.evaluate(profile(shoes=3), view("shoes"), {}, 0)
    assert decision["action"] == "banner" and decision["message"] == "More shoes"
    assert decision["params"] == {"category": "shoes"} and decision["key"] == "category_affinity:shoes"
    assert engine.evaluate(profile(shoes=3), {**view("shoes"), "event_type": "click"}, {}, 0) == []


def test_cooldown_cap_per_key_and_redelivery():
    engine = RuleEngine(parse_rules(AFFINITY))
    (first,) = engine.evaluate(profile(shoes=3, hats=5), view("shoes", "e1"), {}, 0)
    states = {first["key"]: first}
    assert engine.evaluate(profile(shoes=4), view("shoes", "e1"), states, 2 * HOUR) == []  # same event again
    assert engine.evaluate(profile(shoes=4), view("shoes", "e2"), states, HOUR - 1) == []  # cooling down
    assert len(engine.evaluate(profile(shoes=3, hats=5), view("hats", "e3"), states, 1)) == 1  # other key
    (second,) = engine.evaluate(profile(shoes=5), view("shoes", "e4"), states, HOUR)
    assert second["fire_count"] == 2
    states[second["key"]] = second
    assert engine.evaluate(profile(shoes=9), view("shoes", "e5"), states, 10 * HOUR) == []  # max_fires: 2


def test_a_runtime_cel_error_skips_the_rule_and_is_counted(caplog):
    engine = RuleEngine(
        parse_rules("""
rules:
  - id: broken_at_runtime
    when: 'profile.category_views["books"] > 1'
    action: {type: banner, message: hi}
  - id: fine
    when: 'profile.user_id == "u1"'
    action: {type: banner, message: ok}
""")
    )
    fired = engine.evaluate(profile(shoes=1), view("shoes"), {}, 0)
    assert [d["rule"] for d in fired] == ["fine"]
    assert engine.errors["broken_at_runtime"] == 1
    assert "broken_at_runtime" in caplog.text


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("rules: [{id: x, when: 'profile.(', action: {type: banner}}]", "Syntax error"),
        (
            "rules: [{id: x, when: 'nope > 1', action: {type: banner}}]",
            "Undefined variable or function: 'nope'",
        ),
        ("rules: [{id: x, when: 'true', action: {type: explode}}]", "action `type` must be one of"),
        ("rules: [{id: x, when: 'true', action: {type: webhook}}]", "needs an http(s) `url`"),
        ("rules: [{id: x, when: 'true', cooldown: soon, action: {type: banner}}]", "not a duration"),
        (
            "rules: [{id: x, when: 'true', action: {type: banner, message: 'hi {who}'}}]",
            "does not define them",
        ),
        ("rules: [{id: X-1, when: 'true', action: {type: banner}}]", "`id` must match"),
        ("rules: [{id: x, when: 'true', colour: red, action: {type: banner}}]", "unknown key(s) ['colour']"),
        (
            (
                "rules: [{id: x, when: 'true', action: {type: banner}}, "
                "{id: x, when: 'true', action: {type: banner}}]"
            ),
            "duplicate id",
        ),
        ("rules: {", "not valid YAML"),
        ("- just a list", "must be a mapping with a `rules:` list"),
    ],
)
def test_invalid_rule_files_are_rejected_with_a_clear_reason(text, problem):
    with pytest.raises(RuleFileError) as info:
        parse_rules(text)
    assert problem in str(info.value)


def test_every_problem_is_listed_and_nothing_is_half_loaded():
    with pytest.raises(RuleFileError) as info:
        parse_rules(AFFINITY + "  - id: bad\n    when: 'nope'\n    action: {type: banner}\n  - {id: worse}\n")
    assert len(info.value.problems) == 3  # nope is undefined; worse lacks `when` and `action`


def test_durations():
    assert (
        parse_duration_ms("90s") == 90_000
        and parse_duration_ms("2h") == 2 * HOUR
        and parse_duration_ms(5) == 5000
    )
    with pytest.raises(ValueError):
        parse_duration_ms("1 week")


def test_follower_reloads_a_changed_file_and_keeps_the_old_rules_on_a_bad_one(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(AFFINITY)
    follower = RulesFollower(path, refresh_seconds=0)
    assert [r.id for r in follower.current().ruleset.rules] == ["category_affinity"]
    path.write_text(AFFINITY.replace("category_affinity", "renamed_rule"))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    assert [r.id for r in follower.current().ruleset.rules] == ["renamed_rule"]
    path.write_text("rules: [{id: broken, when: 'profile.(', action: {type: banner}}]")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 2_000_000))
    assert [r.id for r in follower.current().ruleset.rules] == ["renamed_rule"]
    assert follower.load_errors == 1


def test_checkpoint_cooldown_holds_within_a_batch_and_segments_are_added():
    engine = RuleEngine(
        parse_rules(
            AFFINITY
            + """
  - id: vip
    on: [purchase]
    when: 'profile.purchase_total >= 100.0'
    action: {type: segment, segment: vip}
    max_fires: 1
"""
        )
    )
    views = [make_event("page_view", ts_ms=i, user_id="u1", category="shoes") for i in range(4)]
    buy = make_event("purchase", ts_ms=9, user_id="u1", order_id="o1", price=150.0)
    triggering = [(e, delta_of(e)) for e in [*views, buy]]
    doc = {**profile(shoes=4), "purchase_total": 150.0}
    fired, segments = decide_checkpoint(engine, triggering, {"u1": "u1"}, {"u1": doc}, {}, 0)
    assert [d["rule"] for d in fired] == ["category_affinity", "vip"]
    assert fired[0]["event_id"] == views[0].event_id  # the earliest event in event time
    assert segments == {"u1": ["vip"]}


def raw(kind: str, minute: int, **fields) -> bytes:
    """An archived event record at 2024-05-01T10:<minute>, its event_id numbered by the minute."""
    import msgspec

    body = {
        "event_id": f"00000000-0000-4000-8000-{minute:012d}",
        "event_type": kind,
        "timestamp": f"2024-05-01T10:{minute:02d}:00Z",
        "metadata": fields.pop("metadata", {}),
        **fields,
    }
    return msgspec.json.encode(body)


def test_backtest_reports_who_fired_when_and_on_which_event_with_stitching():
    from enrichment.catalog import Catalog
    from streaming.rules.backtest import backtest

    events = [
        raw("page_view", 1, anonymous_id="a1", metadata={"category": "shoes"}),
        raw("page_view", 2, anonymous_id="a1", metadata={"category": "shoes"}),
        raw("identify", 3, anonymous_id="a1", user_id="u1"),
        raw("page_view", 4, user_id="u1", anonymous_id="a1", metadata={"category": "shoes"}),
        raw("page_view", 4, user_id="u1", anonymous_id="a1", metadata={"category": "shoes"}),  # duplicate
        raw("page_view", 5, anonymous_id="a2", metadata={"category": "shoes"}),
        b"not json",
    ]
    report = backtest(RuleEngine(parse_rules(AFFINITY)), events, Catalog())
    result = report.results["category_affinity"]
    assert report.events == 5 and report.people == 2
    assert result.fired == 1 and result.people == {"u1"}
    assert result.first_fired_at == "2024-05-01T10:04:00.000Z"
    assert result.examples[0]["event_id"].endswith("000000000004")
    assert result.examples[0]["message"] == "More shoes"


def test_backtest_merges_users_an_identify_links_within_the_limit_and_unlinks():
    """As the stream does: identify(u2, anonymous u1) makes one person "u1" of both users (u2's
    view is the third); with PULSE_IDENTITY_MAX_IDS=1, or the pair unlinked, they stay apart."""
    from enrichment.catalog import Catalog
    from streaming.rules.backtest import backtest

    events = [
        raw("page_view", 1, user_id="u1", metadata={"category": "shoes"}),
        raw("page_view", 2, user_id="u1", metadata={"category": "shoes"}),
        raw("identify", 3, user_id="u2", anonymous_id="u1"),
        raw("page_view", 4, user_id="u2", metadata={"category": "shoes"}),
        raw("page_view", 5, user_id="u1", metadata={"category": "shoes"}),
    ]
    report = backtest(RuleEngine(parse_rules(AFFINITY)), events, Catalog())
    result = report.results["category_affinity"]
    assert report.people == 1
    assert result.fired == 1 and result.people == {"u1"}
    assert result.examples[0]["event_id"].endswith("000000000004")
    for apart in (
        backtest(RuleEngine(parse_rules(AFFINITY)), events, Catalog(), max_ids=1),
        backtest(RuleEngine(parse_rules(AFFINITY)), events, Catalog(), unlinked={frozenset(("u1", "u2"))}),
    ):
        result = apart.results["category_affinity"]
        assert apart.people == 2
        assert result.fired == 1 and result.people == {"u1"}
        assert result.examples[0]["event_id"].endswith("000000000005")


def test_rules_can_read_geo_and_campaign_and_enrichment_runs_only_when_read():
    engine = RuleEngine(
        parse_rules("""
rules:
  - id: german_spring
    on: [page_view]
    when: 'event.geo.country == "DE" && event.campaign.channel == "email"'
    action: {type: banner, message: "Hallo"}
  - id: plain
    on: [click]
    when: 'true'
    action: {type: banner, message: "hi"}
""")
    )
    calls = []

    def enrich(metadata):
        calls.append(metadata)
        return {"geo": {"country": "DE"}, "campaign": {"channel": "email"}}

    view_event = make_event("page_view", user_id="u1", ip="203.0.113.9")
    click = make_event("click", user_id="u1")
    triggering = [(view_event, delta_of(view_event)), (click, delta_of(click))]
    fired, _ = decide_checkpoint(engine, triggering, {"u1": "u1"}, {"u1": profile()}, {}, 0, enrich)
    assert [d["rule"] for d in fired] == ["german_spring", "plain"]
    assert len(calls) == 1  # not for the click, whose rule does not read geo or campaign


@given(key=st.text(), event_id=st.text())
def test_decision_ids_are_the_uuid5_of_key_and_event(key, event_id):
    assert decision_id(key, event_id) == str(uuid.uuid5(DECISION_NAMESPACE, f"{key}/{event_id}"))


def test_a_segment_entered_is_reported_once_as_a_profile_change():
    from streaming.rules.changes import segment_entered

    engine = RuleEngine(
        parse_rules(
            """
rules:
  - id: vip
    on: [purchase]
    when: 'profile.purchase_total >= 100.0'
    action: {type: segment, segment: vip}
  - id: shopper
    on: [purchase]
    when: 'true'
    action: {type: segment, segment: shopper}
"""
        )
    )
    buys = [make_event("purchase", ts_ms=i, user_id="u1", order_id=f"o{i}", price=150.0) for i in range(2)]
    doc = {**profile(), "purchase_total": 300.0, "segments": ["shopper"]}  # already a shopper
    entered: list[dict] = []
    fired, segments = decide_checkpoint(
        engine, [(e, delta_of(e)) for e in buys], {"u1": "u1"}, {"u1": doc}, {}, 0, on_entered=entered.append
    )
    assert segments == {"u1": ["shopper", "vip"]}
    assert [d["segment"] for d in entered] == ["vip"]  # not shopper (held before), vip once
    change = segment_entered(entered[0])
    assert change["type"] == "segment_entered" and change["segment"] == "vip"
    assert change["change_id"] == change["decision_id"] == entered[0]["decision_id"]
    assert change["profile_id"] == "u1" and change["event_id"] == buys[0].event_id
