"""GET /v1/decisions latency at a steady request rate, beside a no-I/O endpoint of the same API.

Open loop: requests are sent on a fixed schedule and latency counts from the scheduled time,
so a slow answer also delays the ones queued behind it (no coordinated omission). The API runs
as `pulse run api` (one uvicorn worker) against an embedded Redis holding 10,000 people, some
stitched, with decisions. The baseline is `GET /v1/schema/event` (same server, no Redis) at the
same rate in the same run.

Usage: .venv/bin/python -m bench.decisions_latency [--rate 1000] [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import redis

from bench.stack import demo_events, local_stack
from enrichment.catalog import Catalog
from orchestration.platform import pulse_app_process, settings_process_env
from streaming.profile_app.pipeline import check_record
from streaming.profiles.store import RedisProfileStore


def seed_people(settings, users: int) -> list[str]:
    """Profiles from demo traffic plus one decision per person; returns ids to query (users and anonymous)."""
    client = redis.Redis.from_url(settings.redis_url)
    store = RedisProfileStore(client, dedupe_window_seconds=3600, session_gap_ms=1_800_000)
    deltas = [r.delta for r in (check_record(json.dumps(e).encode(), Catalog()) for e in demo_events(users * 5, users)) if r.delta]
    store.apply_deltas(deltas)
    ids = sorted({d.profile_id for d in deltas} | {d.anonymous_id for d in deltas if d.anonymous_id})
    now = int(time.time() * 1000)
    decisions = [
        {"decision_id": f"d-{pid}", "rule": "category_affinity", "key": "category_affinity:shoes", "action": "banner",
         "message": "New in shoes", "params": {"category": "shoes"}, "profile_id": pid, "user_id": pid,
         "event_id": "e", "fired_at_ms": now, "fire_count": 1, "expires_at_ms": now + 3_600_000}
        for pid in {d.profile_id for d in deltas}
    ]
    store.record_decisions(decisions, {})
    return ids


async def load(base: str, paths: list[str], rate: float, seconds: float) -> list[float]:
    """Latencies (ms, from the scheduled send time) of ``rate`` requests/s for ``seconds``."""
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=base, headers={"X-Pulse-Key": "bench-read"}, limits=limits, timeout=10) as client:

        async def one(path: str, scheduled: float) -> None:
            nonlocal errors
            response = await client.get(path)
            if response.status_code != 200:
                errors += 1
            latencies.append((time.perf_counter() - scheduled) * 1000)

        start = time.perf_counter()
        tasks = []
        total = int(rate * seconds)
        for i in range(total):
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(random.choice(paths), scheduled)))
        await asyncio.gather(*tasks)
    if errors:
        raise RuntimeError(f"{errors} requests failed")
    return latencies


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 10) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--users", type=int, default=10_000)
    args = parser.parse_args()
    with local_stack() as settings:
        ids = seed_people(settings, args.users)
        api = pulse_app_process("api", settings_process_env(settings), Path(tempfile.mkdtemp()))
        api.start()
        try:
            api.wait_for_port(settings.api_host, settings.api_port, timeout=60)
            base = f"http://{settings.api_host}:{settings.api_port}"
            asyncio.run(load(base, [f"/v1/decisions/{pid}" for pid in ids[:200]], args.rate, 3))  # warm-up
            results = {}
            for name, paths in (("baseline GET /v1/schema/event", ["/v1/schema/event"]), ("GET /v1/decisions/{id}", [f"/v1/decisions/{pid}" for pid in ids])):
                results[name] = asyncio.run(load(base, paths, args.rate, args.seconds))
        finally:
            api.stop()
    print(f"{len(ids)} ids ({args.users} people, some stitched), {args.rate:.0f} requests/s for {args.seconds:.0f} s each\n")
    print(f"{'endpoint':<34}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
    for name, values in results.items():
        print(f"{name:<34}{percentile(values, 50):>9.2f}{percentile(values, 95):>9.2f}{percentile(values, 99):>9.2f}")
    decisions, baseline = results["GET /v1/decisions/{id}"], results["baseline GET /v1/schema/event"]
    print(f"\ndecisions p99 = {percentile(decisions, 99):.2f} ms (target <= 5 ms); "
          f"{percentile(decisions, 99) / percentile(baseline, 99):.1f}x the baseline's p99")


if __name__ == "__main__":
    main()
