"""CEL through the `common-expression-language` bindings: compile, dry-run, evaluate (no eval)."""

from __future__ import annotations

from typing import Any

import cel

#: A context with every variable a rule may use, to catch misspelt names at load time.
SAMPLE_CONTEXT: dict[str, Any] = {
    "profile": {
        "profile_id": "u1",
        "user_id": "u1",
        "anonymous_ids": ["a1"],
        "first_seen": "2024-01-01T00:00:00.000Z",
        "last_seen": "2024-01-01T00:00:00.000Z",
        "event_count": 1,
        "counts_by_type": {"page_view": 1},
        "category_views": {"shoes": 1},
        "last_products": ["p1"],
        "cart": {"p1": 1},
        "purchase_total": 0.0,
        "session_count": 1,
        "last_session": {
            "started_at": "2024-01-01T00:00:00.000Z",
            "ended_at": "2024-01-01T00:00:00.000Z",
            "duration_seconds": 0,
        },
        "engagement_score": 1,
        "intent_score": 0.0,
        "segments": [],
        "traits": {"plan": "pro"},
        "interests": {"shoes": 1.0},
        "counts_7d": {"page_view": 1},
        "counts_30d": {"page_view": 1},
        "computed": {},  # the user's traits (docs/traits.md); absent values are omitted
        "updated_at": "2024-01-01T00:00:00.000Z",
    },
    "event": {
        "event_id": "00000000-0000-4000-8000-000000000000",
        "event_type": "page_view",
        "timestamp": "2024-01-01T00:00:00.000Z",
        "user_id": "u1",
        "anonymous_id": "a1",
        "category": "shoes",
        "product_id": "p1",
        "metadata": {"category": "shoes", "product_id": "p1"},
        "geo": {"country": "DE", "region": "Berlin", "city": "Berlin"},
        "campaign": {"campaign_id": "c1", "name": "spring", "channel": "email", "match": "exact"},
    },
}


class CelProgramError(ValueError):
    """A CEL expression that does not parse or names an unknown variable or function."""


def compile_expression(expression: str) -> Any:
    try:
        return cel.compile(expression)
    except ValueError as exc:
        raise CelProgramError(str(exc).splitlines()[0] if str(exc) else "syntax error") from exc


def dry_run(program: Any) -> None:
    """Evaluate on SAMPLE_CONTEXT; only unknown names are errors (data-dependent ones are not)."""
    try:
        program.execute(SAMPLE_CONTEXT)
    except RuntimeError as exc:
        if "Undefined variable or function" in str(exc):
            raise CelProgramError(str(exc).split(". Check")[0]) from exc
    except Exception:  # noqa: BLE001 - missing keys, type errors: depend on the data, fine at load time
        pass


def context(profile: dict[str, Any], event: dict[str, Any]) -> Any:
    """A reusable evaluation context (converting values to CEL is the costly part)."""
    ctx = cel.Context()
    ctx.add_variable("profile", profile)
    ctx.add_variable("event", event)
    return ctx
