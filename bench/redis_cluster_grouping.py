"""Profile writes on a 3-master Redis Cluster: one script call per node vs one per slot.

Applies the same demo deltas through ``StreamingWriter`` (batches of the sink's SEND_EVERY,
confirmed every --confirm-every deltas, as the sink does at its checkpoints) to:

- one server (the baseline);
- a local 3-master cluster, calls grouped by node (what the store does: one call may span the
  slots of one master, ``#!lua flags=allow-cross-slot-keys``);
- the same cluster, calls grouped by slot (one call per slot a batch touches).

All servers run on this machine, so the cluster adds no network and no extra cores here: the
figure compares client-side cost and call counts, not cluster capacity.

Usage: .venv/bin/python -m bench.redis_cluster_grouping [--events 100000] [--users 20000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from bench.stack import demo_events
from core.redis_client import primaries, redis_from_url
from enrichment.catalog import SAMPLE_CATALOG, Catalog, categories_from_rows, read_catalog_csv
from orchestration.local_services import start_redis, start_redis_cluster
from quality.event_contract import EventContractError, validate_event
from streaming.profile_app.sink import SEND_EVERY
from streaming.profiles.delta import ProfileDelta, event_category, profile_delta
from streaming.profiles.keys import profile_slot
from streaming.profiles.store import RedisProfileStore

T = TypeVar("T")


class SlotGroupedStore(RedisProfileStore):
    """The store with one script call per slot instead of per node (for comparison only)."""

    def by_node(self, items: Sequence[T], profile_id: Callable[[T], str]):  # type: ignore[override]
        groups: dict[int, list[T]] = {}
        for item in items:
            groups.setdefault(profile_slot(profile_id(item)), []).append(item)
        nodes = self.client.nodes_manager
        return [(nodes.get_node_from_slot(slot), group) for slot, group in groups.items()]


def deltas_of(events: list[dict]) -> list[ProfileDelta]:
    catalog = Catalog("bench", categories_from_rows(read_catalog_csv(SAMPLE_CATALOG)))
    deltas = []
    for raw in events:
        try:
            event = validate_event(raw)
        except EventContractError:
            continue
        deltas.append(
            profile_delta(event, event_category(event, catalog.category_of(event.metadata.get("product_id"))))
        )
    return deltas


def run(store: RedisProfileStore, deltas: list[ProfileDelta], confirm_every: int) -> tuple[float, int]:
    """(deltas/s, script calls sent) for one pass over ``deltas``."""
    writer = store.writer()
    calls = applied = 0
    start = time.perf_counter()
    for offset in range(0, len(deltas), SEND_EVERY):
        before = len(writer._sent)
        writer.send(deltas[offset : offset + SEND_EVERY])
        calls += sum(1 for _, call, _ in writer._sent[before:] if call is not None)
        if (offset + SEND_EVERY) % confirm_every == 0:
            applied += writer.confirm()
    applied += writer.confirm()
    elapsed = time.perf_counter() - start
    assert applied == len({(d.profile_id, d.event_id) for d in deltas}), applied
    return len(deltas) / elapsed, calls


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument(
        "--confirm-every", type=int, default=2_000, help="deltas between confirms (checkpoints)"
    )
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    deltas = deltas_of(demo_events(args.events, args.users))
    with tempfile.TemporaryDirectory(prefix="pulse-bench-") as tmp:
        single, single_url = start_redis(Path(tmp), persist=False)
        cluster, cluster_url = start_redis_cluster(Path(tmp), persist=False)
        try:
            options = {"dedupe_window_seconds": 3600, "session_gap_ms": 1_800_000}
            stores = {
                "one server": lambda: RedisProfileStore(redis_from_url(single_url), **options),
                "cluster, a call per node": lambda: RedisProfileStore(redis_from_url(cluster_url), **options),
                "cluster, a call per slot": lambda: SlotGroupedStore(redis_from_url(cluster_url), **options),
            }
            print(
                f"{len(deltas)} deltas of {args.users} users, {SEND_EVERY} per send, "
                f"confirmed every {args.confirm_every}"
            )
            print(f"{'write path':<28}{'deltas/s (runs)':>40}{'script calls':>14}")
            for name, make in stores.items():
                rates = []
                for _ in range(args.repeat):
                    store = make()
                    for node in primaries(store.client):
                        node.flushall()
                    rate, calls = run(store, deltas, args.confirm_every)
                    rates.append(rate)
                    store.client.close()
                runs = ", ".join(f"{r:,.0f}" for r in rates)
                print(f"{name:<28}{runs:>40}{calls:>14,}")
        finally:
            single.stop()
            for proc in cluster:
                proc.stop()


if __name__ == "__main__":
    main()
