"""End-to-end throughput of `pulse up`'s default platform, with the CPU each process spends per event.

The platform is started by `pulse up`'s own code (``LocalPlatform``, without Dagster): an
embedded broker and Redis (append-only file on), topics with 1 partition, the sample catalog,
geo ranges and campaigns published, then `pulse run api`, `pulse run profile-app` and
`pulse run archiver` (and `pulse run relay`, which `pulse up` starts in dev mode) as child
processes with every default setting: the shipped rules
(data/rules/rules.yaml) and traits (data/traits/traits.yaml), the dev write key, the shared
rate limit, the adaptive checkpoints and the archive interval.

Load: ``--senders`` processes (niced, standing in for clients on other machines) POST N
distinct valid demo events to /v1/events in 500-event batches, ``--connections`` requests in
flight each, as fast as the collector answers 202. Measured in the same run:

- collector: events acknowledged per second, from the first request sent to the last 202;
- profile app: distinct events applied per second, from the first applied to the last. The
  ``event_id`` markers are the only keys with a TTL besides the write key's rate-limit bucket,
  so INFO keyspace counts them at no cost; a SCAN counts them exactly at the end;
- archiver: when every event is in the Parquet archive (DuckDB);
- CPU seconds per event of the API, profile app, archiver, webhook relay, broker, Redis and
  the load generator, from the first request until every event is applied and archived;
- baseline: the naive Quix app of bench/profile_app_throughput.py (one unpipelined Redis call
  per operation) reading the same topic from the same broker into the same Redis afterwards,
  with the Pulse apps stopped.

Usage: .venv/bin/python -m bench.pulse_up_throughput [--events 200000] [--users 20000]
       [--senders 2] [--connections 2] [--naive-events 20000] [--repeat 1] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import json
import multiprocessing as mp
import os
import pickle
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.process_cpu import tree_cpu

BATCH = 500  # MAX_BATCH_EVENTS of the collector
WARM_UP_EVENTS = 1000
REDIS_COMMANDS_SHOWN = 12
POLL_S = 0.02
STALL_S = 120.0
IDLE_S = 3.0


# --- load generator (child processes: keep their imports light) -------------------------------


async def post_all(base: str, key: str, bodies: list[bytes], connections: int) -> dict[str, Any]:
    """POST every body with ``connections`` requests in flight; retry 429/503 after Retry-After."""
    queue = collections.deque(bodies)
    stats: dict[str, Any] = {"first_sent": None, "last_ack": 0.0, "accepted": 0, "429": 0, "503": 0}
    headers = {"X-Pulse-Key": key, "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=connections)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60, limits=limits) as client:

        async def worker() -> None:
            while queue:
                body = queue.popleft()
                while True:
                    if stats["first_sent"] is None:
                        stats["first_sent"] = time.monotonic()
                    response = await client.post("/v1/events", content=body)
                    if response.status_code == 202:
                        break
                    if response.status_code not in (429, 503):
                        raise RuntimeError(
                            f"collector answered {response.status_code}: {response.text[:300]}"
                        )
                    stats[str(response.status_code)] += 1
                    await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                stats["accepted"] += response.json()["accepted"]
                stats["last_ack"] = time.monotonic()

        await asyncio.gather(*(worker() for _ in range(connections)))
    return stats


def sender(
    base: str, key: str, bodies_file: str, connections: int, nice: int, ready: Any, go: Any, out: Any
) -> None:
    """One load-generator process: waits for ``go``, sends, reports its stats and CPU seconds."""
    os.nice(nice)
    bodies = pickle.loads(Path(bodies_file).read_bytes())
    ready.set()
    go.wait()
    cpu = time.process_time()
    stats = asyncio.run(post_all(base, key, bodies, connections))
    stats["cpu_s"] = time.process_time() - cpu
    out.put(stats)


# --- measurement helpers ------------------------------------------------------------------------


def valid_unique_events(total: int, users: int) -> list[dict]:
    """The first ``total`` valid demo events with distinct event_ids (the demo also makes
    duplicates and invalid ones, about 3%)."""
    from bench.stack import demo_events
    from quality.event_contract import EventContractError, validate_event

    unique: dict[str, dict] = {}
    for event in demo_events(int(total * 1.05) + 200, users, seed=17):
        try:
            validate_event(event)
        except EventContractError:
            continue
        unique.setdefault(event["event_id"], event)
    events = list(unique.values())[:total]
    assert len(events) == total, f"only {len(events)} valid distinct events"
    return events


class Counters:
    """Events applied (markers in Redis) and archived (Parquet rows), read cheaply."""

    def __init__(self, redis_url: str, archive: Path, write_key: str) -> None:
        import duckdb
        import redis

        from streaming.api.rate_limit import BUCKET_PREFIX

        self.client = redis.Redis.from_url(redis_url)
        self.bucket = BUCKET_PREFIX + hashlib.sha256(write_key.encode()).hexdigest()
        self.archive = archive
        self.duck = duckdb.connect()
        self.duck.execute("SET threads = 1")

    def applied(self) -> int:
        """Keys with a TTL (markers), less the rate-limit bucket; EXISTS first drops it if it expired."""
        pipe = self.client.pipeline(transaction=False)
        pipe.exists(self.bucket)
        pipe.info("keyspace")
        bucket, info = pipe.execute()
        return int(info.get("db0", {}).get("expires", 0)) - bucket

    def reset_command_stats(self) -> None:
        self.client.config_resetstat()

    def command_usec(self) -> dict[str, tuple[int, int]]:
        """(calls, µs inside Redis) per command since the reset; a function's nested commands are
        counted both in their own line and in the FCALL's."""
        stats = self.client.info("commandstats")
        return {
            name.removeprefix("cmdstat_"): (int(s["calls"]), int(s["usec"]))
            for name, s in stats.items()
            if name.startswith("cmdstat_")
        }

    def markers_exact(self) -> int:
        return sum(1 for _ in self.client.scan_iter("pulse:*:seen:*", count=10_000))

    def archived(self, exact: bool = False) -> tuple[int, int]:
        """(rows, distinct event_ids; 0 unless ``exact``) of the archive's finished files."""
        from core.archive_layout import archive_glob, has_archive

        if not has_archive(self.archive):
            return 0, 0
        glob = archive_glob(self.archive).replace("'", "''")
        distinct = "count(DISTINCT event_id)" if exact else "0"
        rows, ids = self.duck.execute(f"SELECT count(*), {distinct} FROM read_parquet('{glob}')").fetchone()
        return int(rows), int(ids)


def wait_for(what: str, done: Any, check_alive: Any, timeout: float = STALL_S) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


# --- one trial ----------------------------------------------------------------------------------


def trial(warm: list[dict], events: list[dict], args: argparse.Namespace) -> dict[str, Any]:
    """Start a fresh `pulse up` platform, load it, measure; then the naive app on the same topic."""
    import msgspec

    from bench.profile_app_throughput import naive
    from core.settings import DEV_WRITE_KEY, PulseSettings
    from orchestration.local_services import free_port
    from orchestration.platform import LocalPlatform

    encode = msgspec.json.encode
    bodies = [encode({"events": events[i : i + BATCH]}) for i in range(0, len(events), BATCH)]
    warm_bodies = [encode({"events": warm[i : i + BATCH]}) for i in range(0, len(warm), BATCH)]
    n, w = len(events), len(warm)

    with tempfile.TemporaryDirectory(prefix="pulse-up-bench-") as tmp:
        # As a user configures `pulse up`: its child processes read PULSE_* from the environment.
        os.environ.update({"PULSE_DATA_DIR": tmp, "PULSE_API_PORT": str(free_port())})
        platform = LocalPlatform(PulseSettings(), with_dagster=False, say=lambda _: None)
        try:
            urls = platform.start()
            settings = platform.settings
            key = settings.write_keys[0] if settings.write_keys else DEV_WRITE_KEY
            apps = {app.name: app.process for app in platform.apps}
            pids = {
                "api (collector)": apps["api"].pid,
                "profile app": apps["profile-app"].pid,
                "archiver": apps["archiver"].pid,
            }
            if "relay" in apps:  # pulse up runs the webhook relay in dev mode (no keys), as here
                pids["webhook relay"] = apps["relay"].pid
            for proc in platform.infra:
                pids["broker" if proc.name.startswith("broker") else "redis"] = proc.pid
            counters = Counters(urls["redis_url"], settings.archive_path, key)

            def check_alive() -> None:
                for name, proc in apps.items():
                    if not proc.alive():
                        raise RuntimeError(f"{name} exited:\n{proc.log_tail()}")

            # Warm-up: connections, group joins, the first idempotent produce, the first archive file.
            asyncio.run(post_all(urls["api_url"], key, warm_bodies, 1))
            wait_for("the warm-up events to be applied", lambda: counters.applied() >= w, check_alive)
            wait_for("the warm-up events to be archived", lambda: counters.archived()[0] >= w, check_alive)

            ctx = mp.get_context("spawn")
            go, out = ctx.Event(), ctx.Queue()
            readies, senders = [], []
            for i in range(args.senders):
                # The bodies go through a file: a large argument would block the parent if the child died.
                bodies_file = Path(tmp) / f"sender-{i}.pickle"
                bodies_file.write_bytes(pickle.dumps(bodies[i :: args.senders]))
                ready = ctx.Event()
                proc = ctx.Process(
                    target=sender,
                    args=(
                        urls["api_url"],
                        key,
                        str(bodies_file),
                        args.connections,
                        args.nice,
                        ready,
                        go,
                        out,
                    ),
                    daemon=True,
                )
                proc.start()
                readies.append(ready)
                senders.append(proc)
            for ready, proc in zip(readies, senders, strict=True):
                if not ready.wait(60):
                    raise RuntimeError(f"a load generator did not start (exit code {proc.exitcode})")

            # Idle: what each process spends with no load (polls, heartbeats), over IDLE_S seconds.
            idle0, idle_at = {name: tree_cpu(pid) for name, pid in pids.items()}, time.monotonic()
            time.sleep(IDLE_S)
            cpu0 = {name: tree_cpu(pid) for name, pid in pids.items()}
            idle = {name: (cpu0[name] - idle0[name]) / (time.monotonic() - idle_at) for name in pids}
            counters.reset_command_stats()
            bench_cpu0 = time.process_time()
            t0 = time.monotonic()
            go.set()
            samples: list[tuple[float, int]] = []
            progress_at, last = t0, -1
            while True:
                now, applied = time.monotonic(), counters.applied() - w
                samples.append((now, applied))
                if applied >= n:
                    break
                if applied != last:
                    progress_at, last = now, applied
                elif now - progress_at > STALL_S:
                    raise RuntimeError(f"no progress for {STALL_S:.0f} s at {applied} of {n} applied")
                check_alive()
                time.sleep(POLL_S)
            t_applied = now
            wait_for("every event to be archived", lambda: counters.archived()[0] >= w + n, check_alive)
            t_archived = time.monotonic()
            cpu1 = {name: tree_cpu(pid) for name, pid in pids.items()}
            bench_cpu = time.process_time() - bench_cpu0
            commands = counters.command_usec()
            sent = [out.get(timeout=60) for _ in senders]
            for proc in senders:
                proc.join(10)

            markers = counters.markers_exact() - w
            rows, ids = counters.archived(exact=True)
            for name in ("archiver", "profile-app", "api", "relay"):  # the baseline runs alone
                if name in apps:
                    apps[name].stop()
            brokers, redis_url = platform.env["PULSE_KAFKA_BROKERS"], platform.env["PULSE_REDIS_URL"]
            naive_rate = naive(
                settings.model_copy(update={"kafka_brokers": brokers, "redis_url": redis_url}),
                min(args.naive_events, w + n),
            )
        finally:
            platform.stop()

    first_sent = min(s["first_sent"] for s in sent)
    last_ack = max(s["last_ack"] for s in sent)
    t_first, a_first = next((t, a) for t, a in samples if a > 0)
    applied_at_last_ack = max((a for t, a in samples if t <= last_ack), default=0)
    window = t_archived - t0
    cpu = {name: cpu1[name] - cpu0[name] for name in pids}
    cpu["load generator"] = sum(s["cpu_s"] for s in sent)
    pulse_rate = (n - a_first) / (t_applied - t_first)
    return {
        "events": n,
        "collector_events_per_s": sum(s["accepted"] for s in sent) / (last_ack - first_sent),
        "accepted": sum(s["accepted"] for s in sent),
        "retries_429": sum(s["429"] for s in sent),
        "retries_503": sum(s["503"] for s in sent),
        "pulse_events_per_s": pulse_rate,
        "backlog_at_last_202": n - applied_at_last_ack,
        "applied_after_last_202_s": t_applied - last_ack,
        "applied_s": t_applied - t0,
        "archived_s": t_archived - t0,
        "markers": markers,
        "archive_rows": rows - w,
        "archive_distinct_event_ids": ids - w,
        "naive_events_per_s": naive_rate,
        "pulse_over_naive": pulse_rate / naive_rate,
        "window_s": window,
        "cpu_s": cpu,
        "cpu_us_per_event": {name: 1e6 * s / n for name, s in cpu.items()},
        "cpu_us_per_event_total": 1e6 * sum(cpu.values()) / n,
        "cores": {name: s / window for name, s in cpu.items()},
        "idle_cores": idle,
        "bench_poller_cpu_s": bench_cpu,
        "redis_us_per_event": {name: usec / n for name, (_, usec) in commands.items()},
        "redis_calls_per_event": {name: calls / n for name, (calls, _) in commands.items()},
    }


# --- report -------------------------------------------------------------------------------------


def median_of(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-figure medians (nested dicts per key)."""
    result: dict[str, Any] = {}
    for name, value in trials[0].items():
        if isinstance(value, dict):
            result[name] = {k: statistics.median(t[name].get(k, 0) for t in trials) for k in value}
        else:
            result[name] = statistics.median(t[name] for t in trials)
    return result


def report(r: dict[str, Any], label: str) -> str:
    lines = [
        f"{label}: {r['events']:,.0f} events",
        f"  collector accepted  {r['collector_events_per_s']:>9,.0f} events/s  (first request -> last 202; "
        f"{r['retries_429']:.0f} x 429, {r['retries_503']:.0f} x 503 retried)",
        f"  profile app applied {r['pulse_events_per_s']:>9,.0f} events/s  (first -> last applied; "
        f"{r['backlog_at_last_202']:,.0f} events behind at the last 202, "
        f"all applied {r['applied_after_last_202_s']:.2f} s after it)",
        f"  naive Quix app      {r['naive_events_per_s']:>9,.0f} events/s  "
        "(same topic and Redis, Pulse apps stopped)",
        f"  pulse / naive       {r['pulse_over_naive']:>9.1f}x           (target >= 10x, aim 20x)",
        f"  applied {r['applied_s']:.1f} s and archived {r['archived_s']:.1f} s after the first request; "
        f"markers {r['markers']:,.0f}, archive rows {r['archive_rows']:,.0f} "
        f"({r['archive_distinct_event_ids']:,.0f} distinct event_ids)",
        "",
        f"  CPU over {r['window_s']:.1f} s (first request -> all applied and archived)",
        f"  {'process':<18}{'CPU s':>8}{'us/event':>10}{'cores':>7}{'idle cores':>12}",
    ]
    for name, us in r["cpu_us_per_event"].items():
        idle = r["idle_cores"].get(name)
        lines.append(
            f"  {name:<18}{r['cpu_s'][name]:>8.2f}{us:>10.1f}{r['cores'][name]:>7.2f}"
            + (f"{idle:>12.3f}" if idle is not None else f"{'-':>12}")
        )
    total_s = sum(r["cpu_s"].values())
    lines.append(
        f"  {'total':<18}{total_s:>8.2f}{r['cpu_us_per_event_total']:>10.1f}{total_s / r['window_s']:>7.2f}"
    )
    lines.append(
        f"  (idle cores: each process with no load, over {IDLE_S:.0f} s before it; "
        f"the bench's own polling: {r['bench_poller_cpu_s']:.2f} CPU s, not in the total)"
    )
    top = sorted(r["redis_us_per_event"].items(), key=lambda kv: -kv[1])[:REDIS_COMMANDS_SHOWN]
    lines.append("  Redis commands by time inside Redis (INFO commandstats; FCALL includes its nested ones)")
    lines.extend(
        f"  {name:<22}{us:>8.1f} us/event{r['redis_calls_per_event'][name]:>8.2f} calls/event"
        for name, us in top
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="distinct valid events sent")
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--senders", type=int, default=2, help="load-generator processes")
    parser.add_argument("--connections", type=int, default=2, help="requests in flight per sender")
    parser.add_argument("--nice", type=int, default=5, help="niceness of the load generator")
    parser.add_argument("--naive-events", type=int, default=20_000, help="events the naive baseline reads")
    parser.add_argument("--repeat", type=int, default=1, help="trials, each on a fresh platform (medians)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    everything = valid_unique_events(WARM_UP_EVENTS + args.events, args.users)
    warm, events = everything[:WARM_UP_EVENTS], everything[WARM_UP_EVENTS:]
    trials = []
    for i in range(args.repeat):
        trials.append(trial(warm, events, args))
        if not args.json:
            print(report(trials[-1], f"trial {i + 1} of {args.repeat}"), flush=True)
    summary = median_of(trials)
    if args.json:
        print(json.dumps({"args": vars(args), "trials": trials, "median": summary}, indent=2))
    elif args.repeat > 1:
        print("\n" + report(summary, f"median of {args.repeat} trials"))


if __name__ == "__main__":
    main()
