"""The `pulse` command line."""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from core import service_registry
from core.settings import PulseSettings, settings_markdown, settings_reference
from orchestration.cli_errors import CommandFailed, redis_unreachable
from orchestration.dlq_cli import dlq
from orchestration.forget_cli import forget
from orchestration.identity_cli import identity
from orchestration.keys_cli import keys

if TYPE_CHECKING:
    from assets.profile_rebuild import RebuildReport


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # A transitive import (authlib via quixstreams) warns about httpx on every start.
    warnings.filterwarnings("ignore", module="authlib")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def cli(verbose: bool) -> None:
    """Pulse: real-time customer profiles from events.

    Settings come from PULSE_* environment variables (`pulse settings` lists them).
    """
    _configure_logging(verbose)


@cli.command()
@click.option("--no-dagster", is_flag=True, help="Do not start `dagster dev`.")
def up(no_dagster: bool) -> None:
    """Run the whole local platform in the foreground; Ctrl-C stops everything.

    Starts an embedded Kafka-protocol broker and Redis unless PULSE_KAFKA_BROKERS /
    PULSE_REDIS_URL are set, creates the topics, then runs the collector/API, the profile
    app and `dagster dev` (on PULSE_DAGSTER_PORT).
    """
    from orchestration.platform import LocalPlatform, PlatformError

    settings = PulseSettings()
    platform = LocalPlatform(settings, with_dagster=not no_dagster, say=click.echo)
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        urls = platform.start()
        click.echo("")
        click.secho("Pulse is up.", fg="green", bold=True)
        for name, value in urls.items():
            click.echo(f"  {name:<14} {service_registry.redact(value)}")
        click.echo(f"  {'data_dir':<14} {settings.data_path}  (logs in {settings.data_path / 'logs'})")
        click.echo("\nTry: pulse demo      Stop: Ctrl-C")
        while not stopping:
            platform.supervise_once()
            time.sleep(0.5)
    except PlatformError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        click.echo("stopping Pulse ...")
        platform.stop()
        click.echo("stopped.")


@cli.command(name="run")
@click.argument("app", type=click.Choice(["api", "profile-app", "archiver", "relay"]))
def run_app(app: str) -> None:
    """Run one Pulse app in the foreground (what containers and `pulse up` run)."""
    settings = PulseSettings()
    if app == "api":
        from streaming.api.main import main
    elif app == "archiver":
        from streaming.archiver.main import main
    elif app == "relay":
        from streaming.relay.main import main
    else:
        from streaming.profile_app.main import main
    main(settings)


@cli.command()
@click.argument("app", type=click.Choice(["profile-app", "archiver", "relay"]))
@click.option(
    "--max-age",
    default=60.0,
    show_default=True,
    help="Seconds since the app last polled Kafka before it counts as stuck.",
)
@click.option(
    "--ready",
    is_flag=True,
    help="Also require a settled consumer-group membership, or under `pulse up` partitions assigned "
    "without a group join (readiness, not liveness).",
)
def probe(app: str, max_age: float, ready: bool) -> None:
    """Exit 0 if a consumer app on this machine polls Kafka (and with --ready, has joined its group).

    For Kubernetes exec probes and Compose healthchecks: the app rewrites
    <data_dir>/run/APP-HOST.status.json from librdkafka statistics every 5 s, from its processing loop.
    """
    from streaming.liveness import judge, read_status, status_path

    healthy, why = judge(
        read_status(status_path(PulseSettings().data_path, app)), time.time(), max_age, ready
    )
    click.echo(f"{app}: {'ok' if healthy else 'FAIL'}: {why}")
    if not healthy:
        sys.exit(1)


@cli.command()
@click.option("--events", "total", default=5000, show_default=True, help="Events to generate.")
@click.option("--users", default=200, show_default=True, help="Distinct visitors.")
@click.option("--batch-size", default=100, show_default=True, help="Events per request.")
@click.option("--seed", default=None, type=int, help="Random seed for repeatable traffic.")
@click.option("--url", default=None, help="Collector base URL (default: the running `pulse up`).")
@click.option(
    "--key", default=None, help="Write key (default: first of PULSE_WRITE_KEYS, else dev-write-key)."
)
def demo(total: int, users: int, batch_size: int, seed: int | None, url: str | None, key: str | None) -> None:
    """Send realistic shop traffic to the collector, with a progress bar and a summary."""
    from orchestration.demo import run_demo

    settings = PulseSettings()
    summary = run_demo(settings, total=total, users=users, batch_size=batch_size, seed=seed, url=url, key=key)
    if summary.failed_requests:
        sys.exit(1)


def _parse_time(_ctx: click.Context, _param: click.Parameter, value: str | None) -> datetime | None:
    """An ISO 8601 time option (UTC unless it names a zone); a usage error otherwise."""
    if value is None:
        return None
    from quality.event_contract import parse_iso_datetime

    try:
        parsed = parse_iso_datetime(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 time, e.g. 2024-05-01 or 2024-05-01T12:00:00Z"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@cli.command()
@click.option(
    "--start",
    default=None,
    callback=_parse_time,
    help="Event time to start at, ISO 8601 (default: the beginning). UTC unless a zone is given.",
)
@click.option(
    "--end",
    default=None,
    callback=_parse_time,
    help="Event time to stop before, ISO 8601 (default: the end).",
)
@click.option(
    "--rebuild",
    is_flag=True,
    help="Instead of refusing, rebuild the live people whose events would count twice from the "
    "archive (as `pulse rebuild`), then replay the window's other events.",
)
def replay(start: datetime | None, end: datetime | None, rebuild: bool) -> None:
    """Replay archived events into the events topic. Nothing counts twice: events whose dedupe
    markers have expired over live profiles make it refuse (exit status 2, naming `pulse rebuild`),
    or, with --rebuild, rebuild those people from the archive first."""
    from rich.console import Console
    from rich.progress import Progress

    from assets.batch_runs import ReplayWouldRecount
    from assets.batch_runs import replay as run_replay
    from assets.kafka_health import ArchiverBehind, BrokerUnavailable
    from streaming.traits.loader import TraitFileError

    settings = PulseSettings()
    try:
        with Progress(console=Console(stderr=True)) as bar:
            task = bar.add_task("replaying", total=None)
            summary = run_replay(
                settings,
                start,
                end,
                lambda done, total: bar.update(task, description="replaying", completed=done, total=total),
                rebuild=rebuild,
                rebuild_progress=_stage_progress(bar, task, "rebuilding"),
            )
    except ReplayWouldRecount as exc:
        click.echo(f"pulse replay: refused, nothing sent: {exc}", err=True)
        sys.exit(2)
    except (ArchiverBehind, BrokerUnavailable, TraitFileError) as exc:  # from the rebuild, before sending
        raise CommandFailed(
            f"{exc} (nothing replayed; run the same command again once fixed: it finishes the rebuild)"
        ) from None
    if summary.rebuilt is not None:
        click.echo(_rebuilt_line(summary.rebuilt))
    click.echo(
        f"replayed {summary.replayed} events to {settings.topic_events}; "
        f"skipped {summary.skipped_forgotten} of forgotten users"
    )


def _stage_progress(bar: Any, task: Any, prefix: str) -> Callable[[str, int, int], None]:
    """A rebuild's progress(stage, done, total) on a rich progress bar's task."""

    def update(stage: str, done: int, total: int) -> None:
        bar.update(task, description=f"{prefix}: {stage}", completed=done, total=total)

    return update


def _rebuilt_line(report: RebuildReport) -> str:
    forgotten = report.forgotten_parts
    return (
        f"rebuilt {report.parts} profiles from the archive: {report.events_applied} events counted, "
        f"{report.already_applied} found counted already (the stream applied them during the rebuild), "
        f"{report.markers_deleted} dedupe markers reset"
        + (f"; {report.parts_empty} had no archived event (left absent)" if report.parts_empty else "")
        + (
            f"; left out {report.events_forgotten} forgotten events of {len(forgotten)} ids "
            f"({', '.join(forgotten[:5])})"
            if forgotten
            else ""
        )
    )


@cli.command()
@click.argument("ids", nargs=-1)
@click.option("--all", "all_profiles", is_flag=True, help="Rebuild every profile (archive and Redis).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def rebuild(ids: tuple[str, ...], all_profiles: bool, as_json: bool) -> None:
    """Recompute people from the archive while the stream runs, exactly: each named user or
    anonymous id's person (its user part and every linked anonymous id), or every profile.

    Events the stream applies meanwhile are counted once; decisions and segments are kept and
    nothing fires. Forgotten people are skipped. Exit status 2 when it cannot run.
    """
    import duckdb
    import redis
    from rich.console import Console
    from rich.progress import Progress

    from assets.kafka_health import ArchiverBehind, BrokerUnavailable
    from assets.profile_rebuild import rebuild_profiles
    from core.service_registry import ServiceNotConfigured
    from streaming.traits.loader import TraitFileError

    if bool(ids) == all_profiles:
        raise click.UsageError("name the people to rebuild (user or anonymous ids), or give --all, not both")
    settings = PulseSettings()
    try:
        with Progress(console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("rebuilding", total=None)
            report = rebuild_profiles(
                settings, ids, all_profiles=all_profiles, progress=_stage_progress(bar, task, "rebuilding")
            )
    except (ServiceNotConfigured, ArchiverBehind, BrokerUnavailable, TraitFileError) as exc:
        raise CommandFailed(
            f"{exc} (run the same rebuild again once fixed: it finishes an interrupted one)"
        ) from None
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise CommandFailed(redis_unreachable(exc)) from None
    except duckdb.Error as exc:
        raise CommandFailed(f"cannot read the archive under {settings.archive_path}: {exc}") from None
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        click.echo(_rebuilt_line(report))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--as-of",
    default=None,
    callback=_parse_time,
    help="Compare as of this broker time, ISO 8601 (default: the profile app's committed offsets): "
    "records received from then on, and the profiles they touch, are left out.",
)
def reconcile(as_json: bool, as_of: datetime | None) -> None:
    """Compare live profiles with a batch recompute from the archive; exit 1 on any drift,
    2 when it cannot run."""
    import duckdb
    import redis
    from rich.console import Console
    from rich.progress import Progress

    from assets.batch_runs import AsOfInFuture
    from assets.batch_runs import reconcile as run_reconcile
    from assets.kafka_health import ArchiverBehind, BrokerUnavailable
    from core.service_registry import ServiceNotConfigured

    settings = PulseSettings()
    try:
        with Progress(console=Console(stderr=True), transient=True) as bar:  # stdout carries the report only
            task = bar.add_task("reading live profiles", total=None)
            report = run_reconcile(
                settings, lambda done, total: bar.update(task, completed=done, total=total), as_of
            )
    except AsOfInFuture as exc:
        raise click.BadParameter(str(exc), param_hint="--as-of") from None
    except (ServiceNotConfigured, ArchiverBehind, BrokerUnavailable) as exc:
        raise CommandFailed(str(exc)) from None
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise CommandFailed(redis_unreachable(exc)) from None
    except duckdb.Error as exc:
        raise CommandFailed(f"cannot read the archive under {settings.archive_path}: {exc}") from None
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2, default=str))
    else:
        click.echo(
            f"checked {report.profiles_checked} profiles: {report.matched} match, "
            f"{report.mismatched} mismatched, "
            f"{report.missing_in_redis} missing in Redis, {report.extra_in_redis} extra in Redis"
        )
        for field_name, count in report.mismatched_fields.items():
            click.echo(f"  {field_name}: {count}")
        click.echo(f"checked the person of {report.people_checked} ids: {report.people_mismatched} differ")
        if report.in_flight:
            click.echo(f"{report.in_flight} profiles left out: they have records from the cut on")
    sys.exit(1 if report.drifted else 0)


@cli.command()
def doctor() -> None:
    """Check broker, Redis, topics, API and Dagster; say what is wrong and how to fix it."""
    from orchestration.doctor import run_checks

    settings = PulseSettings()
    ok = True
    for check in run_checks(settings):
        mark = click.style("ok  ", fg="green") if check.ok else click.style("FAIL", fg="red")
        click.echo(f"{mark} {check.name}: {check.detail}")
        if not check.ok:
            ok = False
            if check.fix:
                click.echo(f"     fix: {check.fix}")
    sys.exit(0 if ok else 1)


@cli.command(name="settings")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--markdown", is_flag=True, help="The table of docs/configuration.md.")
def show_settings(as_json: bool, markdown: bool) -> None:
    """List every PULSE_* setting with its default and meaning."""
    if markdown:
        click.echo(settings_markdown(), nl=False)
        return
    rows = settings_reference()
    if as_json:
        click.echo(json.dumps([dict(zip(("variable", "default", "description"), r)) for r in rows], indent=2))
        return
    for variable, default, description in rows:
        click.echo(f"{variable:<38} {default!s:<22} {description}")


@cli.group()
def rules() -> None:
    """Check or back-test personalization rule files (docs/rules.md)."""


@rules.command(name="check")
@click.argument("rules_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def rules_check(rules_file: Path) -> None:
    """Validate a rule file; list every problem (exit 2) or the rules it defines."""
    from streaming.rules.loader import RuleFileError, load_rules

    try:
        ruleset = load_rules(rules_file)
    except RuleFileError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    for rule in ruleset.rules:
        on = ", ".join(sorted(rule.on)) or "any event"
        click.echo(f"{rule.id:<28} on {on:<28} -> {rule.action.type}")
    click.echo(f"{len(ruleset)} rules OK (version {ruleset.version})")


@rules.command(name="test")
@click.argument("rules_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--start",
    default=None,
    callback=_parse_time,
    help="Event time to start at, ISO 8601 (default: the beginning of the archive).",
)
@click.option(
    "--end",
    default=None,
    callback=_parse_time,
    help="Event time to stop before, ISO 8601 (default: the end).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def rules_test(rules_file: Path, start: datetime | None, end: datetime | None, as_json: bool) -> None:
    """Back-test a rule file on the archive: how many people each rule would have fired for, when,
    on which events."""
    from assets.batch_runs import backtest_rules
    from streaming.rules.loader import RuleFileError

    settings = PulseSettings()
    try:
        report = backtest_rules(settings, rules_file, start, end)
    except RuleFileError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
        return
    click.echo(f"{report.events} distinct events of {report.people} people in {settings.archive_path}")
    for result in report.results.values():
        span = (
            f"first {result.first_fired_at}, last {result.last_fired_at}" if result.fired else "never fired"
        )
        click.echo(
            f"{result.rule:<28} fired {result.fired:>6} times for {len(result.people):>6} people  ({span})"
        )
        for example in result.examples:
            click.echo(
                f"    {example['at']}  {example['person']}  event {example['event_id']}  {example['message']}"
            )
    for rule_id, count in report.runtime_errors.items():
        click.echo(click.style(f"{rule_id}: {count} runtime errors (see the log)", fg="yellow"))


@cli.group()
def traits() -> None:
    """Check computed-trait files (docs/traits.md)."""


@traits.command(name="check")
@click.argument("traits_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def traits_check(traits_file: Path) -> None:
    """Validate a traits file; list every problem (exit 2) or the traits it defines."""
    from streaming.traits.loader import TraitFileError, load_traits

    try:
        loaded = load_traits(traits_file)
    except TraitFileError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    for trait in loaded.computed:
        on = ", ".join(sorted(trait.on or ())) or "any event"
        extras = [f"field {trait.field}"] if trait.field else []
        extras += [f"window {trait.window_days}d"] if trait.window_days else []
        extras += [f"half-life {trait.half_life_days:g}d"] if trait.half_life_days else []
        extras += ["where"] if trait.where else []
        click.echo(f"{trait.name:<28} {trait.kind:<8} on {on:<28} {', '.join(extras)}")
    click.echo(f"{len(loaded)} traits OK")


@traits.command(name="backfill")
@click.argument("names", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def traits_backfill(names: tuple[str, ...], as_json: bool) -> None:
    """Make live traits exact for history from the archive (default: every one not backfilled yet).

    Safe while the stream runs and to run twice: nothing is counted twice. Dagster runs it by
    itself when a new trait goes live (sensor new_traits_sensor).
    """
    import redis
    from rich.console import Console
    from rich.progress import Progress

    from assets.trait_backfill import TraitBackfillError, backfill_traits
    from core.service_registry import ServiceNotConfigured
    from streaming.traits.loader import TraitFileError

    settings = PulseSettings()
    try:
        with Progress(console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("backfilling profiles", total=None)
            report = backfill_traits(
                settings, names, lambda done, total: bar.update(task, completed=done, total=total)
            )
    except (TraitBackfillError, TraitFileError, ServiceNotConfigured) as exc:
        raise CommandFailed(str(exc)) from None
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise CommandFailed(redis_unreachable(exc)) from None
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    elif not report.traits:
        click.echo("nothing to backfill: every live trait is backfilled")
    else:
        click.echo(
            f"backfilled {', '.join(report.traits)}: {report.events} archived events of "
            f"{report.profiles} profiles, {report.ops_applied} cell updates"
        )


@cli.command()
def schema() -> None:
    """Print the JSON Schema of the event contract."""
    from quality.json_schema import event_json_schema

    click.echo(json.dumps(event_json_schema(), indent=2))


cli.add_command(keys)  # orchestration/keys_cli.py
cli.add_command(dlq)  # orchestration/dlq_cli.py
cli.add_command(forget)  # orchestration/forget_cli.py
cli.add_command(identity)  # orchestration/identity_cli.py


def main() -> None:
    cli(prog_name="pulse")


if __name__ == "__main__":
    main()
