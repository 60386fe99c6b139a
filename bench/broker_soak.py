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
from collections.abc import Callable
from pathlib import Path

import httpx

from bench.e2e_latency import VisibilityWatcher, percentiles, post_events, send_steady
from bench.process_cpu import CpuTimeline, PeriodicSampler
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


class RedisInfoTimeline(PeriodicSampler):
    """Samples Redis's memory, key count and forks (AOF rewrites) every ``every`` s."""

    def __init__(self, url: str, every: float = 1.0) -> None:
        from core.redis_client import redis_from_url

        super().__init__(every, "redis-info")
        self._redis = redis_from_url(url)
        self.samples: list[tuple[float, dict[str, float]]] = []

    def _sample(self) -> None:
        try:
            info = self._redis.info("all")
        except Exception:  # noqa: BLE001 - a sample lost is fine; the soak goes on
            return
        self.samples.append(
            (
                time.monotonic(),
                {
                    "used_mb": info["used_memory"] / 2**20,
                    "keys": float(info.get("db0", {}).get("keys", 0)),
                    "forks": float(info["total_forks"]),
                    "rewriting": float(info["aof_rewrite_in_progress"]),
                    "fork_ms": info["latest_fork_usec"] / 1000,
                },
            )
        )

    def per_window(self, start: float, window: float, windows: int) -> list[dict[str, float]]:
        """Per window: the last memory and key count, forks started, seconds seen rewriting."""
        out: list[dict[str, float]] = [{} for _ in range(windows)]
        forks_before = next((s["forks"] for at, s in self.samples if at >= start), 0.0)
        for at, sample in self.samples:
            index = int((at - start) // window)
            if 0 <= index < windows:
                row = out[index]
                row.update(used_mb=sample["used_mb"], keys=sample["keys"], fork_ms=sample["fork_ms"])
                row["forks"] = sample["forks"] - forks_before
                row["rewriting_s"] = row.get("rewriting_s", 0.0) + sample["rewriting"] * self._every
        for index in range(windows - 1, 0, -1):  # forks started in each window, not since the start
            if "forks" in out[index] and "forks" in out[index - 1]:
                out[index]["forks"] -= out[index - 1]["forks"]
        return out


def print_cpu_windows(windows: list[dict[str, float]], window: float, rate: float) -> None:
    """CPU µs per event of each process in each window (events = the steady rate)."""
    names = sorted({name for row in windows for name in row})
    print("\nCPU µs per event by window (CPU seconds / (rate × window)):")
    print(f"{'window':>7}" + "".join(f"{name[:12]:>13}" for name in names) + f"{'total':>9}")
    for index, row in enumerate(windows):
        per_event = {name: row.get(name, 0.0) / (rate * window) * 1e6 for name in names}
        print(
            f"{(index + 1) * window:>6.0f}s"
            + "".join(f"{per_event[name]:>13.1f}" for name in names)
            + f"{sum(per_event.values()):>9.1f}"
        )


def print_rss_windows(windows: list[dict[str, float]], window: float) -> None:
    """Resident memory (MB) of each process at each window's end."""
    names = sorted({name for row in windows for name in row})
    print("\nResident MB by window:")
    print(f"{'window':>7}" + "".join(f"{name[:12]:>13}" for name in names))
    for index, row in enumerate(windows):
        print(f"{(index + 1) * window:>6.0f}s" + "".join(f"{row.get(name, 0.0):>13.0f}" for name in names))


def print_redis_windows(windows: list[dict[str, float]], window: float) -> None:
    """Redis's memory and keys at each window's end, AOF-rewrite forks and time spent rewriting."""
    print("\nRedis by window:")
    print(f"{'window':>7}{'used MB':>9}{'keys':>11}{'forks':>6}{'rewriting s':>12}{'fork ms':>8}")
    for index, row in enumerate(windows):
        print(
            f"{(index + 1) * window:>6.0f}s{row.get('used_mb', 0):>9.0f}{row.get('keys', 0):>11.0f}"
            f"{row.get('forks', 0):>6.0f}{row.get('rewriting_s', 0):>12.0f}{row.get('fork_ms', 0):>8.1f}"
        )


def prepare_valkey(
    url: str, prefill_keys: int, rewrite_percentage: int | None, say: Callable[[str], None]
) -> None:
    """Fill Valkey with ``prefill_keys`` dedupe-marker-like keys (one week's expiry, as the markers),
    then set its AOF rewrite percentage; a rewrite of the filled dataset runs before the load."""
    import uuid

    from core.redis_client import redis_from_url

    client = redis_from_url(url)
    if prefill_keys:
        started = time.monotonic()
        for start in range(0, prefill_keys, 10_000):
            pipe = client.pipeline(transaction=False)
            for i in range(start, min(start + 10_000, prefill_keys)):
                pipe.set(f"pulse:{{prefill-{i % 20_000}}}:seen:{uuid.uuid4()}", b"1", ex=7 * 86400)
            pipe.execute()
        client.bgrewriteaof()
        while (
            client.info("persistence")["aof_rewrite_in_progress"]
            or client.info("persistence")["aof_rewrite_scheduled"]
        ):
            time.sleep(0.5)
        say(f"prefilled {prefill_keys} keys in {time.monotonic() - started:.0f}s (rewritten)")
    if rewrite_percentage is not None:
        client.config_set("auto-aof-rewrite-percentage", rewrite_percentage)
    client.close()


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
    parser.add_argument(
        "--prefill-keys",
        type=int,
        default=0,
        help="write this many dedupe-marker-like keys into Valkey before the load: the dataset of a "
        "long soak, so its AOF rewrites take seconds from the start",
    )
    parser.add_argument(
        "--aof-rewrite-percentage",
        type=int,
        default=None,
        help="CONFIG SET auto-aof-rewrite-percentage on the embedded Valkey (100 by default): lower "
        "makes rewrites come sooner",
    )
    parser.add_argument(
        "--no-fork-priority",
        action="store_true",
        help="leave Valkey's AOF-rewrite children at normal priority (orchestration/fork_priority.py): "
        "the baseline of that change",
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
    if args.no_fork_priority:
        platform.redis_forks = None
    prepare_valkey(urls["redis_url"], args.prefill_keys, args.aof_rewrite_percentage, say)
    stop = threading.Event()

    def supervise() -> None:
        while not stop.wait(0.2):
            platform.supervise_once()

    supervisor = threading.Thread(target=supervise, daemon=True)
    supervisor.start()

    def platform_pids() -> dict[str, int]:
        pids = {app.name: app.process.pid for app in platform.apps if app.process and app.process.pid}
        for proc in platform.infra:
            if proc.pid:
                pids["broker" if proc.name.startswith("broker") else "redis"] = proc.pid
        pids["load generator"] = os.getpid()  # it started the platform: counted alone
        if watcher_pid:
            pids["watcher"] = watcher_pid
        return pids

    watcher_pid = 0
    cpu = CpuTimeline(platform_pids, alone=frozenset({"load generator"}))
    redis_info = RedisInfoTimeline(urls["redis_url"])
    cpu.start()
    redis_info.start()
    try:
        total = int(args.rate * args.seconds * 1.02) + 1000
        # Some generated events are invalid or repeat an id: ask for more, keep the valid unique ones.
        events = valid_unique_events(int((total + args.single) * 1.3), users=20_000)[: total + args.single]
        if len(events) < total + args.single:
            raise SystemExit(f"only {len(events)} valid events generated; lower --rate or --seconds")
        mark_for_timing(events[:total], args.time_every)
        mark_for_timing(events[total:], 1)  # single requests come slowly enough to time each
        watcher = VisibilityWatcher(urls["redis_url"], id_prefix=TIMED_PREFIX)
        watcher_pid = watcher.pid
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
        cpu.stop()
        redis_info.stop()
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
    windows = int(args.seconds // args.window)
    print_cpu_windows(cpu.per_window(load_start, args.window, windows), args.window, args.rate)
    print_rss_windows(cpu.rss_per_window(load_start, args.window, windows), args.window)
    print_redis_windows(redis_info.per_window(load_start, args.window, windows), args.window)
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
