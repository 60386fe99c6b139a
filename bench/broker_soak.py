"""Soak of `pulse up`'s platform on its embedded broker: is it as fast at the end as at the start?

Runs the platform as `pulse up` does (``LocalPlatform`` without Dagster: collector, profile app
with the shipped rules and traits, archiver, webhook relay; embedded Tansu and Valkey; broker
maintenance on, docs/architecture.md), then:

1. ``--seconds`` of steady load at ``--rate`` events/s, one request every ``--request-every`` s;
   a 503 is retried after its ``Retry-After``, as the SDKs do. Latency is request first sent ->
   visible in Redis (keyspace notifications, one event in ``--time-every``), so a request held
   during a maintenance counts with its wait. Per window: p50/p99, 503s, maintenances.
2. ``--single`` single-event requests one after another (a tracker sending one event per request,
   the worst case for the broker's batch count), timed the same way: the first thousand against
   the last thousand.

Usage: .venv/bin/python -m bench.broker_soak [--rate 3000] [--seconds 1800] [--window 60]
       [--request-every 0.16] [--single 12000] [--max-batches N] [--timeline FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench.e2e_latency import VisibilityWatcher, percentiles, post_events, send_steady
from bench.soak import TIMED_PREFIX, mark_for_timing, valid_unique_events
from core.settings import DEV_WRITE_KEY, PulseSettings
from orchestration.local_services import free_port
from orchestration.platform import LocalPlatform


async def single_requests(base: str, events: list[dict], rejected: list[float]) -> dict[str, float]:
    """One event per request, one request at a time; event_id -> first send time."""
    sent: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=base, headers={"X-Pulse-Key": DEV_WRITE_KEY}, timeout=60) as client:
        for event in events:
            first = time.monotonic()
            if await post_events(client, [event], rejected):
                sent[event["event_id"]] = first
    return sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=1800)
    parser.add_argument("--window", type=float, default=60)
    parser.add_argument("--request-every", type=float, default=0.16)
    parser.add_argument("--time-every", type=int, default=30)
    parser.add_argument("--single", type=int, default=12_000)
    parser.add_argument("--max-batches", type=int, default=None, help="PULSE_EMBEDDED_BROKER_MAX_BATCHES")
    parser.add_argument(
        "--timeline",
        type=Path,
        default=None,
        help="write every timed steady event (s after the load's start, ms to visible, ms to the "
        "request's 202) and the maintenances' ends (s) to this JSON file, to see what an event sent "
        "near a maintenance waits and where",
    )
    args = parser.parse_args()

    data = Path(tempfile.mkdtemp(prefix="pulse-broker-soak-"))
    os.environ.update(PULSE_DATA_DIR=str(data), PULSE_API_PORT=str(free_port()))
    for name in ("PULSE_KAFKA_BROKERS", "PULSE_REDIS_URL"):
        os.environ.pop(name, None)
    if args.max_batches:
        os.environ["PULSE_EMBEDDED_BROKER_MAX_BATCHES"] = str(args.max_batches)
    maintenances: list[tuple[float, str]] = []

    def say(line: str) -> None:
        if line.startswith("broker maintenance"):
            maintenances.append((time.monotonic(), line))
        print(f"  [{time.strftime('%H:%M:%S')}] {line}", flush=True)

    platform = LocalPlatform(PulseSettings(), with_dagster=False, say=say)
    urls = platform.start()
    stop = threading.Event()

    def supervise() -> None:
        while not stop.wait(0.2):
            platform.supervise_once()

    supervisor = threading.Thread(target=supervise, daemon=True)
    supervisor.start()
    try:
        total = int(args.rate * args.seconds * 1.02) + 1000
        # Some generated events are invalid or repeat an id: ask for more, keep the valid unique ones.
        events = valid_unique_events(int((total + args.single) * 1.3), users=20_000)[: total + args.single]
        if len(events) < total + args.single:
            raise SystemExit(f"only {len(events)} valid events generated; lower --rate or --seconds")
        mark_for_timing(events[:total], args.time_every)
        mark_for_timing(events[total:], 1)  # single requests come slowly enough to time each
        watcher = VisibilityWatcher(urls["redis_url"], id_prefix=TIMED_PREFIX)
        rejected: list[float] = []
        base = urls["api_url"]
        asyncio.run(send_steady(base, DEV_WRITE_KEY, events[:500], 500, 1.0, 0.1, rejected))  # warm-up
        time.sleep(5)
        load_start = time.monotonic()
        steady_times = asyncio.run(
            send_steady(
                base, DEV_WRITE_KEY, events[500:total], args.rate, args.seconds, args.request_every, rejected
            )
        )
        steady = {event_id: sent for event_id, (sent, _acked) in steady_times.items()}
        single_start = time.monotonic()
        single = (
            asyncio.run(single_requests(base, events[total : total + args.single], rejected))
            if args.single
            else {}
        )
        time.sleep(10)
        seen = watcher.finish()
    finally:
        stop.set()
        supervisor.join(timeout=60)
        platform.stop()

    def latencies(sent: dict[str, float]) -> list[tuple[float, float]]:
        return sorted((at, (seen[i] - at) * 1000) for i, at in sent.items() if i in seen)

    print(
        f"\nsteady: {args.rate} events/s for {args.seconds:.0f}s, a request every {args.request_every}s; "
        f"{len(steady)} events accepted, {len(maintenances)} maintenances in all"
    )
    print(f"{'window':>7}{'timed':>7}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'503s':>6}{'maint':>6}")
    timed_steady = latencies({i: t for i, t in steady.items() if i.startswith(TIMED_PREFIX)})
    for w in range(int(args.seconds // args.window)):
        lo, hi = load_start + w * args.window, load_start + (w + 1) * args.window
        values = [ms for at, ms in timed_steady if lo <= at < hi]
        stats = percentiles(values) if values else {}
        print(
            f"{(w + 1) * args.window:>6.0f}s{len(values):>7}{stats.get('p50', float('nan')):>9.1f}"
            f"{stats.get('p99', float('nan')):>9.1f}{max(values, default=float('nan')):>9.1f}"
            f"{sum(lo <= t < hi for t in rejected):>6}{sum(lo <= t < hi for t, _ in maintenances):>6}"
        )
    if args.timeline:
        args.timeline.write_text(
            json.dumps(
                {
                    "events": [(round(at - load_start, 4), round(ms, 2)) for at, ms in timed_steady],
                    "acknowledged": sorted(
                        (round(sent - load_start, 4), round((acked - sent) * 1000, 2))
                        for event_id, (sent, acked) in steady_times.items()
                        if event_id.startswith(TIMED_PREFIX)
                    ),
                    "maintenances": [(round(t - load_start, 3), line) for t, line in maintenances],
                }
            )
        )
    if single:
        every = latencies(single)
        first, last = [ms for _, ms in every[:1000]], [ms for _, ms in every[-1000:]]
        refused = sum(t >= single_start for t in rejected)
        maintained = sum(t >= single_start for t, _ in maintenances)
        print(f"\nsingle-event requests: {len(single)} accepted, {refused} 503s, {maintained} maintenances")
        for name, part in (("first 1000", first), ("last 1000", last)):
            stats = percentiles(part)
            print(f"  {name}: p50 {stats['p50']:.1f} ms, p99 {stats['p99']:.1f} ms (sent -> visible)")
    for _, line in maintenances:
        print(f"  {line}")


if __name__ == "__main__":
    main()
