"""Profile changes the rules make, as records of pulse.profiles.changes (pure)."""

from __future__ import annotations

from typing import Any

SEGMENT_ENTERED = "segment_entered"


def segment_entered(decision: dict[str, Any]) -> dict[str, Any]:
    """The change record of a segment decision that put its person in a segment new to them.

    ``change_id`` is the decision's id: a checkpoint retried after a crash writes the same
    change again under the same id, so consumers deduplicate by it.
    """
    return {
        "change_id": decision["decision_id"],
        "type": SEGMENT_ENTERED,
        "profile_id": decision["profile_id"],
        "user_id": decision.get("user_id"),
        "segment": decision["segment"],
        "rule": decision["rule"],
        "decision_id": decision["decision_id"],
        "event_id": decision["event_id"],
        "at": decision["fired_at"],
        "at_ms": decision["fired_at_ms"],
    }
