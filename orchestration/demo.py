"""`pulse demo`: send generated traffic to the collector and summarise what happened."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from core import service_registry
from core.http_retry import post_with_retry
from core.settings import DEV_READ_KEY, DEV_WRITE_KEY, PulseSettings
from enrichment.catalog import SAMPLE_CATALOG, categories_from_rows, read_catalog_csv
from orchestration.demo_traffic import TrafficGenerator

logger = logging.getLogger(__name__)


@dataclass
class DemoSummary:
    sent: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    failed_requests: int = 0
    seconds: float = 0.0
    sample_profile: str | None = None


def run_demo(
    settings: PulseSettings,
    *,
    total: int,
    users: int,
    batch_size: int,
    seed: int | None = None,
    url: str | None = None,
    key: str | None = None,
    console: Console | None = None,
) -> DemoSummary:
    """Send ``total`` events in batches, with a progress bar; print and return a summary."""
    console = console or Console()
    base = (url or service_registry.api_url(settings)).rstrip("/")
    plain_keys = [
        k for k in settings.write_keys if not k.startswith("sha256:")
    ]  # a stored hash cannot be sent
    write_key = key or (plain_keys[0] if plain_keys else DEV_WRITE_KEY)
    products = categories_from_rows(read_catalog_csv(SAMPLE_CATALOG))
    generator = TrafficGenerator(products, users=users, seed=seed)
    summary = DemoSummary()
    batch: list[dict] = []
    started = time.perf_counter()
    with (
        httpx.Client(base_url=base, headers={"X-Pulse-Key": write_key}, timeout=30) as client,
        Progress(
            TextColumn("[bold]sending events"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
        ) as progress,
    ):
        task = progress.add_task("send", total=total)

        def flush() -> None:
            if not batch:
                return
            response = post_with_retry(
                client, "/v1/events", attempts=5, first_delay=0.2, max_delay=5.0, json={"events": batch}
            )
            summary.sent += len(batch)
            if response is None or response.status_code != 202:
                summary.failed_requests += 1
                detail = response.text[:200] if response is not None else "no response"
                console.print(Text("request failed", style="red"), Text(f": {detail}"), sep="")
            else:
                body = response.json()
                summary.accepted += body["accepted"]
                for rejection in body["rejected"]:
                    summary.rejected[rejection["error"].split(":")[0]] += 1
                if summary.sample_profile is None:
                    first = batch[0]
                    summary.sample_profile = first.get("user_id") or first.get("anonymous_id")
            progress.advance(task, len(batch))
            batch.clear()

        for event in generator.events(total):
            batch.append(event)
            if len(batch) >= batch_size:
                flush()
        flush()
    summary.seconds = time.perf_counter() - started
    _print_summary(console, summary, base)
    return summary


def _print_summary(console: Console, summary: DemoSummary, base: str) -> None:
    table = Table(title="pulse demo", show_header=False)
    table.add_row("events sent", str(summary.sent))
    table.add_row("accepted (incl. ~2% re-sent duplicates)", str(summary.accepted))
    table.add_row("rejected → dead-letter topic", str(sum(summary.rejected.values())))
    for reason, count in summary.rejected.most_common():
        table.add_row(Text(f"  {reason}"), str(count))  # Text: a reason is not markup
    table.add_row("failed requests", str(summary.failed_requests))
    rate = summary.sent / summary.seconds if summary.seconds else 0.0
    table.add_row("time", f"{summary.seconds:.1f}s ({rate:,.0f} events/s)")
    console.print(table)
    if summary.sample_profile:
        console.print(
            f"See a profile: curl -H 'X-Pulse-Key: {DEV_READ_KEY}' "
            f"{base}/v1/profiles/{summary.sample_profile}",
            markup=False,
        )
