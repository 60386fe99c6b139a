"""CEL through the `common-expression-language` bindings: compile, dry-run, evaluate (no eval)."""

from __future__ import annotations

from typing import Any

import cel

from streaming.traits.registry import BUILTIN_TRAITS, sample_fields

#: A context with every variable a rule may use, to catch misspelt names at load time: the trait
#: registry's fields (streaming/traits/definition.py) and those kept beside it.
SAMPLE_CONTEXT: dict[str, Any] = {
    "profile": {
        "profile_id": "u1",
        "user_id": "u1",
        "anonymous_ids": ["a1"],
        **sample_fields(BUILTIN_TRAITS),
        "last_products": ["p1"],
        "session_count": 1,
        "last_session": {
            "started_at": "2024-01-01T00:00:00.000Z",
            "ended_at": "2024-01-01T00:00:00.000Z",
            "duration_seconds": 0,
        },
        "intent_score": 0.0,
        "segments": [],
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
