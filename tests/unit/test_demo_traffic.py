"""The demo's traffic: realistic events, with duplicates and invalid ones in the stated share."""

import uuid

from orchestration.demo_traffic import DUPLICATE_RATE, INVALID_RATE, TrafficGenerator
from quality.event_contract import EventContractError, validate_event


def test_an_event_id_repeats_only_as_an_exact_duplicate_of_an_earlier_event():
    events = list(TrafficGenerator({"p1": "shoes", "p2": "books"}, users=5, seed=1).events(5000))
    first_with_id: dict[str, dict] = {}
    duplicates = invalid = 0
    for event in events:
        try:
            validate_event(event)
        except EventContractError:
            invalid += 1
        event_id = event.get("event_id")
        if event_id is None:  # an invalid variant without one
            continue
        assert str(uuid.UUID(event_id)) == event_id
        if event_id in first_with_id:
            assert event == first_with_id[event_id]
            duplicates += 1
        else:
            first_with_id[event_id] = event
    assert 0.5 * DUPLICATE_RATE * len(events) < duplicates < 2 * DUPLICATE_RATE * len(events)
    assert 0.5 * INVALID_RATE * len(events) < invalid < 2 * INVALID_RATE * len(events)


def test_the_summary_prints_rejection_reasons_as_sent_not_as_markup():
    from collections import Counter

    from rich.console import Console

    from orchestration.demo import DemoSummary, _print_summary

    reason = "event_type 'Page View!' does not match ^[a-z][a-z0-9_]{0,63}$"
    summary = DemoSummary(
        sent=3, accepted=2, rejected=Counter({reason: 1}), sample_profile="anon-[b]x", seconds=1.0
    )
    console = Console(record=True, width=200)
    _print_summary(console, summary, "http://127.0.0.1:8080")
    printed = console.export_text()
    assert reason in printed
    assert "/v1/profiles/anon-[b]x" in printed
