"""`pulse forget ID` and `pulse forget report ID`: forget a person as DELETE /v1/profiles does, and
say what was erased where (docs/security.md, "Forget")."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from core.settings import PulseSettings
from orchestration.cli_errors import CommandFailed, redis_unreachable


class _ForgetGroup(click.Group):
    """`pulse forget ID` forgets, `pulse forget report ID` reports; `pulse forget id ID` forgets any id."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["id", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_ForgetGroup)
def forget() -> None:
    """Forget a person (pulse forget ID) or report what a forget erased (pulse forget report ID)."""


@forget.command(name="id")
@click.argument("profile_id")
def forget_id(profile_id: str) -> None:
    """Forget the person of PROFILE_ID now, as DELETE /v1/profiles/{id} does: the forget record
    first (durable), then Redis; the next forget run purges the archive. Prints JSON."""
    import redis

    from core import service_registry
    from core.forget_record import ForgetRecord
    from core.redis_client import redis_from_url
    from core.service_registry import ServiceNotConfigured
    from core.time_format import iso_from_ms
    from streaming.profiles.store import RedisProfileStore

    settings = PulseSettings()
    try:
        store = RedisProfileStore(
            redis_from_url(service_registry.redis_url(settings), socket_connect_timeout=5),
            dedupe_window_seconds=settings.dedupe_window_seconds,
            session_gap_ms=settings.session_timeout_seconds * 1000,
            forget_record=ForgetRecord(settings.forget_path),
        )
        done = store.forget_person(profile_id)
    except (ServiceNotConfigured, redis.ConnectionError, redis.TimeoutError) as exc:
        raise CommandFailed(redis_unreachable(exc)) from None
    result: dict[str, Any] = {
        "profile_id": profile_id,
        "forgotten": done.keys_deleted > 0,
        "ids": done.ids,
        "forgotten_at": iso_from_ms(done.at_ms),
        "redis_keys_deleted": done.keys_deleted,
        "archive": "purged by the next forget run (Dagster forget_job, hourly)",
    }
    click.echo(json.dumps(result, indent=2))


@forget.command(name="report")
@click.argument("profile_id")
def forget_report_command(profile_id: str) -> None:
    """What was erased of PROFILE_ID's person in each store (Redis, archive, DuckDB) and what the
    broker still holds until when, as JSON; exit status 1 when PROFILE_ID was never forgotten."""
    from assets.forget_report import forget_report

    report = forget_report(PulseSettings(), profile_id)
    click.echo(json.dumps(report, indent=2))
    sys.exit(0 if report["forgotten"] else 1)
