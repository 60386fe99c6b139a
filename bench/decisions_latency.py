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
import gc
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

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
    deltas = [
        r.delta
        for r in (check_record(json.dumps(e).encode(), Catalog()) for e in demo_events(users * 5, users))
        if r.delta
    ]
    store.apply_deltas(deltas)
    ids = sorted({d.profile_id for d in deltas} | {d.anonymous_id for d in deltas if d.anonymous_id})
    now = int(time.time() * 1000)
    decisions = [
        {
            "decision_id": f"d-{pid}",
            "rule": "category_affinity",
            "key": "category_affinity:shoes",
            "action": "banner",
            "message": "New in shoes",
            "params": {"category": "shoes"},
            "profile_id": pid,
            "user_id": pid,
            "event_id": "e",
            "fired_at_ms": now,
            "fire_count": 1,
            "expires_at_ms": now + 3_600_000,
        }
        for pid in {d.profile_id for d in deltas}
    ]
    store.record_decisions(decisions, {})
    return ids


async def _connection(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(host, port)


async def _get(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], request: bytes) -> int:
    """One keep-alive HTTP/1.1 GET on a raw connection; returns the status code."""
    reader, writer = conn
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return status


async def load(
    host: str, port: int, paths: list[str], rate: float, seconds: float, connections: int = 64
) -> tuple[list[float], list[float]]:
    """Latencies (ms) from the scheduled and from the actual send time, ``rate`` requests/s for ``seconds``.

    A minimal raw-socket HTTP client, so the load generator costs far less than the server.
    """
    # The generator's own garbage collections would stall every response in flight (the
    # process holds the whole stack's imports): collect now, not during the measurement.
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        return await _load(
            pool_size=connections, host=host, port=port, paths=paths, rate=rate, seconds=seconds
        )
    finally:
        gc.enable()
        gc.unfreeze()


async def _load(
    host: str, port: int, paths: list[str], rate: float, seconds: float, pool_size: int
) -> tuple[list[float], list[float]]:
    pool: asyncio.Queue = asyncio.Queue()
    for _ in range(pool_size):
        pool.put_nowait(await _connection(host, port))
    latencies: list[float] = []
    service: list[float] = []  # from the actual send: excludes the load generator's own lag
    errors = 0

    async def one(path: str, scheduled: float) -> None:
        nonlocal errors
        conn = await pool.get()
        request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nX-Pulse-Key: bench-read\r\n\r\n".encode()
        sent = time.perf_counter()
        try:
            if await _get(conn, request) != 200:
                errors += 1
        finally:
            pool.put_nowait(conn)
        done = time.perf_counter()
        latencies.append((done - scheduled) * 1000)
        service.append((done - sent) * 1000)

    start = time.perf_counter()
    tasks = []
    for i in range(int(rate * seconds)):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(random.choice(paths), scheduled)))
    await asyncio.gather(*tasks)
    while not pool.empty():
        pool.get_nowait()[1].close()
    if errors:
        raise RuntimeError(f"{errors} requests failed")
    return latencies, service


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 10) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument(
        "--workers", type=int, default=1, help="uvicorn workers of the API (PULSE_API_WORKERS)"
    )
    args = parser.parse_args()
    with local_stack() as settings:
        settings = settings.model_copy(update={"api_workers": args.workers})
        ids = seed_people(settings, args.users)
        api = pulse_app_process("api", settings_process_env(settings), Path(tempfile.mkdtemp()))
        api.start()
        try:
            api.wait_for_port(settings.api_host, settings.api_port, timeout=60)
            host, port = settings.api_host, settings.api_port
            asyncio.run(
                load(host, port, [f"/v1/decisions/{pid}" for pid in ids[:200]], args.rate, 3)
            )  # warm-up
            results = {}
            for name, paths in (
                ("baseline GET /v1/schema/event", ["/v1/schema/event"]),
                ("GET /v1/decisions/{id}", [f"/v1/decisions/{pid}" for pid in ids]),
            ):
                results[name] = asyncio.run(load(host, port, paths, args.rate, args.seconds))
        finally:
            api.stop()
    print(
        f"{len(ids)} ids ({args.users} people, some stitched), "
        f"{args.rate:.0f} requests/s for {args.seconds:.0f} s each, "
        f"{args.workers} API worker(s)\n"
    )
    print(
        f"{'endpoint':<34}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
        "   (from the scheduled time | from the actual send)"
    )
    for name, (scheduled, sent) in results.items():
        row = "".join(f"{percentile(scheduled, q):>9.2f}" for q in (50, 95, 99))
        row_sent = "".join(f"{percentile(sent, q):>9.2f}" for q in (50, 95, 99))
        print(f"{name:<34}{row}   |{row_sent}")
    decisions, baseline = results["GET /v1/decisions/{id}"][0], results["baseline GET /v1/schema/event"][0]
    print(
        f"\ndecisions p99 = {percentile(decisions, 99):.2f} ms from the scheduled time (target <= 5 ms); "
        f"{percentile(decisions, 99) / percentile(baseline, 99):.1f}x the baseline's p99"
    )


if __name__ == "__main__":
    main()
