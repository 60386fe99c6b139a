"""`pulse dlq`: dead letters by reason, and `pulse dlq replay` to fix and republish them."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from core.settings import PulseSettings

RAW_PREVIEW = 160


@click.group(invoke_without_command=True)
@click.option(
    "--samples", default=3, show_default=True, type=click.IntRange(0, 100), help="Examples per reason."
)
@click.option(
    "--source", default=None, help="Only dead letters of this source (collector, segment, profile-app)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_context
def dlq(ctx: click.Context, samples: int, source: str | None, as_json: bool) -> None:
    """List archived dead letters by reason, with counts per source and the latest samples.

    Reads the archive of the dead-letter topic ($PULSE_DATA_DIR/archive/dead_letters/, written
    by the archiver). `pulse dlq replay` fixes and republishes them.
    """
    if ctx.invoked_subcommand is not None:
        return
    from assets.dead_letters import summarize_dead_letters
    from core.time_format import iso_millis

    settings = PulseSettings()
    summaries = summarize_dead_letters(settings.archive_path, samples=samples, source=source)
    if as_json:
        click.echo(json.dumps([_summary_dict(s) for s in summaries], indent=2, default=str))
        return
    total = sum(s.count for s in summaries)
    if not total:
        click.echo(
            f"no dead letters archived under {settings.archive_path / 'dead_letters'} "
            f"(the archiver archives {settings.topic_dlq}; `pulse doctor` checks it runs)"
        )
        return
    click.echo(f"{total} dead letters, {len(summaries)} reasons:\n")
    width = len(str(summaries[0].count))
    for summary in summaries:
        sources = ", ".join(f"{name} {n}" for name, n in summary.sources.most_common())
        click.secho(f"{summary.count:>{width}}  {summary.reason}", bold=True, nl=False)
        click.echo(f"  ({sources})")
        for letter in summary.samples:
            where = f"{letter.coordinates.topic}[{letter.coordinates.partition}]@{letter.coordinates.offset}"
            at = iso_millis(letter.received_at) if letter.received_at else "time unknown"
            click.echo(f"{'':>{width}}    {where}  {at}  {letter.source}: {letter.error}")
            click.echo(f"{'':>{width}}      {_preview(letter.raw)}")
    click.echo(
        "\nFix and republish: pulse dlq replay --fix module:function|patch.json [--reason TEXT] [--dry-run]"
    )


@dlq.command(name="replay")
@click.option(
    "--fix",
    "fix_spec",
    default=None,
    metavar="MODULE:FUNCTION|PATCH.json",
    help="Apply this fix first: a Python function (taking the rejected JSON value, returning the fixed "
    "one or None to skip it; its module importable from the current folder or PYTHONPATH) or an "
    "RFC 6902 JSON-patch file.",
)
@click.option("--reason", default=None, help="Only dead letters whose error contains TEXT (any case).")
@click.option(
    "--source", default=None, help="Only dead letters of this source (collector, segment, profile-app)."
)
@click.option("--dry-run", is_flag=True, help="Re-validate and report; send nothing, record nothing.")
@click.option(
    "--retry-in-doubt",
    is_flag=True,
    help="Also send dead letters an interrupted run may have sent (their event_id dedupes them "
    "within the dedupe window).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def replay(
    fix_spec: str | None,
    reason: str | None,
    source: str | None,
    dry_run: bool,
    retry_in_doubt: bool,
    as_json: bool,
) -> None:
    """Re-validate archived dead letters (after --fix) and republish the valid ones to the events topic.

    Each dead letter is republished at most once, ever: the replay ledger beside the archive
    (dead_letters/replay-ledger.jsonl) records it, so running this again sends nothing twice.
    Dead letters still invalid are reported by reason and left for a better fix. Exit status
    0 when done, 1 when the broker or Redis failed, 2 on a usage error (a bad --fix).
    """
    import redis
    from rich.console import Console
    from rich.progress import Progress

    from assets.dead_letter_fixes import FixSpecError, load_fix
    from assets.dead_letter_replay import DeadLetterReplayIncomplete, replay_dead_letters
    from core.service_registry import ServiceNotConfigured

    fix = None
    if fix_spec is not None:
        sys.path.insert(0, os.getcwd())  # a fix module beside the user, as `python -m` would find it
        try:
            fix = load_fix(fix_spec)
        except FixSpecError as exc:
            raise click.BadParameter(str(exc), param_hint="--fix") from None
    settings = PulseSettings()
    try:
        with Progress(console=Console(stderr=True), transient=True) as bar:  # stdout: the summary only
            task = bar.add_task("re-validating dead letters", total=None)
            summary = replay_dead_letters(
                settings,
                fix=fix,
                reason=reason,
                source=source,
                dry_run=dry_run,
                retry_in_doubt=retry_in_doubt,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    except (DeadLetterReplayIncomplete, ServiceNotConfigured) as exc:
        raise click.ClickException(str(exc)) from None
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise click.ClickException(
            f"cannot reach Redis to read the forgotten users ({exc}); is `pulse up` running? (`pulse doctor`)"
        ) from None
    if as_json:
        click.echo(json.dumps(summary.as_dict(), indent=2))
        return
    _echo_replay(summary, settings.topic_events)


def _echo_replay(summary: Any, topic: str) -> None:
    verb = "would republish" if summary.dry_run else "republished"
    click.echo(f"{verb} {summary.republished} of {summary.considered} dead letters to {topic}")
    for count, what in (
        (summary.already_replayed, "already replayed (the ledger has them)"),
        (summary.in_doubt, "in doubt from an interrupted run, not sent (--retry-in-doubt sends them)"),
        (summary.declined, "left alone by the fix (it returned None)"),
        (summary.skipped_forgotten, "of forgotten users, skipped"),
    ):
        if count:
            click.echo(f"  {count} {what}")
    invalid = sum(summary.still_invalid.values())
    if invalid:
        click.echo(f"  {invalid} still invalid, not sent:")
        for kind, count in summary.still_invalid.most_common():
            click.echo(f"    {count:>6}  {kind}")
        for coordinates, error in summary.invalid_samples:
            click.echo(f"    e.g. {coordinates.topic}[{coordinates.partition}]@{coordinates.offset}: {error}")


def _summary_dict(summary: Any) -> dict[str, Any]:
    return {
        "reason": summary.reason,
        "count": summary.count,
        "sources": dict(summary.sources.most_common()),
        "samples": [
            {
                "topic": d.coordinates.topic,
                "partition": d.coordinates.partition,
                "offset": d.coordinates.offset,
                "error": d.error,
                "source": d.source,
                "received_at": d.received_at,
                "raw": d.raw.decode(errors="replace"),
            }
            for d in summary.samples
        ],
    }


def _preview(raw: bytes) -> str:
    text = raw.decode(errors="replace").replace("\n", " ")
    return text if len(text) <= RAW_PREVIEW else text[: RAW_PREVIEW - 1] + "…"
