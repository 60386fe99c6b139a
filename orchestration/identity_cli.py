"""`pulse identity`: show who an id is merged with, and undo a bad merge (docs/api.md#identity)."""

from __future__ import annotations

import json
from typing import Any

import click

from core.settings import PulseSettings
from orchestration.cli_errors import CommandFailed, redis_unreachable


def _store() -> Any:
    from core import service_registry
    from core.redis_client import redis_from_url
    from streaming.profiles.store import RedisProfileStore

    settings = PulseSettings()
    return RedisProfileStore(
        redis_from_url(service_registry.redis_url(settings)),
        dedupe_window_seconds=settings.dedupe_window_seconds,
        session_gap_ms=settings.session_timeout_seconds * 1000,
        identity_max_ids=settings.identity_max_ids,
    )


def _run(action: Any) -> Any:
    import redis

    from core.service_registry import ServiceNotConfigured

    try:
        return action(_store())
    except ServiceNotConfigured as exc:
        raise CommandFailed(str(exc)) from None
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise CommandFailed(redis_unreachable(exc)) from None


@click.group()
def identity() -> None:
    """Who an id is merged with (`show`), and undoing a bad merge (`unlink`)."""


@identity.command(name="show")
@click.argument("profile_id")
def show(profile_id: str) -> None:
    """Print the identity record of PROFILE_ID's person as JSON (GET /v1/profiles/{id}/identity).

    Its canonical id, user ids, anonymous ids, every link between its user ids with the event that
    made it, the links refused by PULSE_IDENTITY_MAX_IDS, and the unlinked pairs. Exit status 1
    for an unknown id.
    """
    view = _run(lambda store: store.identity_view(profile_id))
    if view is None:
        raise click.ClickException(f"no profile for {profile_id!r}")  # exit status 1
    click.echo(json.dumps(view, indent=2))


@identity.command(name="unlink")
@click.argument("id_a")
@click.argument("id_b")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def unlink(id_a: str, id_b: str, as_json: bool) -> None:
    """Undo the link between ID_A and ID_B for good, and split their person.

    Works for two user ids an identify/alias merged, and for an anonymous id and its user. The link
    is deleted and the pair suppressed: neither a redelivered copy of the linking event nor a new
    event naming both ids links them again. No event moves (people are merged at read), so both
    people are exact at once; their segments are dropped and come back with their next events.
    The unlink is also logged in <archive>/identity/unlinks.jsonl, for reconcile and rebuilds.
    If the two ids are still linked through other ids, they stay one person (said below).
    """
    from assets.identity_unlinks import record_unlink
    from streaming.profiles.identity_admin import UnlinkError

    try:
        result = _run(lambda store: store.unlink(id_a, id_b))
    except UnlinkError as exc:
        raise click.UsageError(str(exc)) from None
    # Kept beside the archive too: a Redis rebuilt from the archive must not merge the pair again.
    record_unlink(PulseSettings().archive_path, id_a, id_b, result["unlinked_at_ms"])
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    before = result["before"][id_a]["person_id"], result["before"][id_b]["person_id"]
    after = result["after"][id_a]["person_id"], result["after"][id_b]["person_id"]
    click.echo(f"unlinked {id_a} and {id_b} (people before: {', '.join(dict.fromkeys(before))})")
    if result["still_one_person"]:
        click.echo(f"still one person ({after[0]}) through other links: see `pulse identity show {id_a}`")
    else:
        click.echo(f"{id_a} is now in person {after[0]}, {id_b} in person {after[1]}")
    click.echo(f"segments dropped on {len(result['segments_cleared'])} ids; the rules derive them again")
