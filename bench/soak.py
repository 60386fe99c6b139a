"""Soak: a steady event rate through the collector and profile app, watching for drift.

Every ``--window`` seconds it records end-to-end latency (request sent -> visible in Redis, from
keyspace notifications as in bench/e2e_latency.py, on one event in ``--time-every``; it includes
the collector's 202), the resident memory of the API and the profile app, Redis memory, the
consumer lag (records the profile app has not committed, every 5 s) and the CPU share of the
API, the profile app, the broker and Redis (100 = one core). A healthy run is flat:
memory levels off, latency percentiles do not climb, the lag stays bounded and the backlog
drains when the load stops. The first window (start-up, group join) is the baseline the later
ones are compared with.

Usage: .venv/bin/python -m bench.soak [--rate 3000] [--seconds 1800] [--window 60]
       [--request-every 0.05] [--time-every 30] [--no-latency]
(tests/integration/test_soak.py runs a 2-minute version in CI.)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from assets.kafka_health import BrokerUnavailable, group_lag
from bench.apps import start_app
from bench.e2e_latency import VisibilityWatcher, percentiles, send_steady
from bench.stack import demo_events, local_stack
from enrichment.catalog import SAMPLE_CATALOG, read_catalog_csv
from enrichment.reference_store import CATALOG, publish_reference
from quality.event_contract import EventContractError, validate_event
from streaming.api.ingest import MAX_BATCH_EVENTS

#: One collector request (= about one Kafka record batch) every 50 ms, as a batching tracker or
#: SDK sends. The embedded broker (Tansu 0.6, memory storage) slows down sharply once a partition
#: holds ~10k record batches (bench/RESULTS.md), which 10 ms requests reach within two minutes.
REQUEST_EVERY_S = 0.05

#: Latency is timed on one event in this many, those whose id starts with ``TIMED_PREFIX``.
TIME_EVERY = 30
TIMED_PREFIX = "00000"
#: Processes whose CPU share each window reports.
CPU_PROCESSES = ("api", "app", "broker", "redis")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (and its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def broker_pid(brokers: str) -> int:
    """The embedded broker's process, found by the port it listens on."""
    port = brokers.rsplit(":", 1)[1]
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue  # the process ended meanwhile
        if args and args[0].endswith(b"tansu") and any(arg.endswith(f":{port}".encode()) for arg in args):
            return int(cmdline.parent.name)
    raise RuntimeError(f"no broker process listens on {brokers}")


def rss_mib(pid: int) -> float:
    """Resident memory of a process (and its threads) in MiB, from /proc."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Sample:
    at: float
    api_mib: float
    app_mib: float
    redis_mib: float
    #: records in the events topic the profile app's group has not committed yet (-1: not measured)
    lag: int = -1
    #: CPU seconds used so far by each process (api, app, broker, redis)
    cpu: dict[str, float] = field(default_factory=dict)


@dataclass
class SoakReport:
    rate: int
    seconds: float
    window: float
    acknowledged: int = 0
    #: events applied to profiles (their dedupe markers counted in Redis)
    visible: int = 0
    #: the events timed for latency: acknowledged, and seen by the watcher
    timed_acknowledged: int = 0
    timed_seen: int = 0
    drained_after_s: float | None = None
    #: the profile app's exit status when the load ended (None = still running) and its log's end
    app_exit: int | None = None
    app_log_tail: str = ""
    windows: list[dict[str, float | None]] = field(default_factory=list)

    def table(self) -> str:
        """Per window; "-" where a figure was not measured."""

        def cell(value: float | None, width: int, digits: int) -> str:
            return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"

        lines = [
            f"{'window':>8}{'events':>9}{'timed':>7}{'p50 ms':>9}{'p99 ms':>9}"
            f"{'api MiB':>9}{'app MiB':>9}{'redis MiB':>10}{'max lag':>9}"
            + "".join(f"{name + ' cpu%':>12}" for name in CPU_PROCESSES)
        ]
        for w in self.windows:
            lines.append(
                f"{w['end']:>7.0f}s{w['events']:>9.0f}{w['timed']:>7.0f}"
                f"{cell(w['p50'], 9, 1)}{cell(w['p99'], 9, 1)}{w['api_mib']:>9.1f}"
                f"{w['app_mib']:>9.1f}{w['redis_mib']:>10.1f}{cell(w.get('max_lag'), 9, 0)}"
                + "".join(cell(w.get(f"{name}_cpu"), 12, 0) for name in CPU_PROCESSES)
            )
        return "\n".join(lines)


def valid_unique_events(total: int, users: int) -> list[dict]:
    unique: dict[str, dict] = {}
    for event in demo_events(total, users, seed=11):
        try:
            validate_event(event)
        except EventContractError:
            continue
        unique.setdefault(event["event_id"], event)
    return list(unique.values())


def mark_for_timing(events: list[dict], every: int) -> set[str]:
    """Give every ``every``-th event an id starting with ``TIMED_PREFIX``; returns those ids.

    The ids stay UUIDs (only leading hex digits change) and unique; a random UUID starts with
    the prefix once in a million, and such an event is simply timed too.
    """
    timed = set()
    for event in events[::every]:
        event["event_id"] = TIMED_PREFIX + event["event_id"][len(TIMED_PREFIX) :]
        timed.add(event["event_id"])
    return timed


def run_soak(
    rate: int,
    seconds: float,
    window: float,
    users: int = 20_000,
    latency: bool = True,
    request_every: float = REQUEST_EVERY_S,
    time_every: int = TIME_EVERY,
    drain_timeout: float = 60.0,
    nice_load: int = 0,
) -> SoakReport:
    """Run the soak on a fresh embedded broker and Redis; return per-window figures.

    After the load, the backlog gets up to ``drain_timeout`` seconds to be applied. ``nice_load``
    lowers this process's priority once the services have started (the load generator stands in
    for other machines, so Pulse gets the cores); it cannot be raised again, so only the
    command line uses it, never a test.

    Latency is measured on one event in ``time_every``: a keyspace watcher told of every event
    falls behind at these rates on two shared cores and Redis drops its subscription.
    ``latency=False`` skips the watcher altogether.
    """
    events = valid_unique_events(int(rate * seconds * 1.05) + 1500, users)
    timed = mark_for_timing(events[1000:], time_every) if latency else set()
    report = SoakReport(rate, seconds, window)
    with local_stack() as settings:
        client = redis.Redis.from_url(settings.redis_url)
        publish_reference(client, CATALOG, read_catalog_csv(SAMPLE_CATALOG), "product_id")
        watcher = VisibilityWatcher(settings.redis_url, id_prefix=TIMED_PREFIX) if latency else None
        api = start_app(settings, "api")
        app = start_app(settings, "profile-app")
        samples: list[Sample] = []
        stop = threading.Event()

        pids = {
            "api": api.process.pid,
            "app": app.process.pid,
            "broker": broker_pid(settings.kafka_brokers),
            "redis": int(client.info("server")["process_id"]),
        }

        def sample() -> None:
            # Lag as the stream_health asset measures it (a fetch's high watermark, right on Tansu
            # too), every 5th second: each measurement opens its own admin client and probe consumer.
            tick = 0
            while not stop.wait(1.0):
                lag = -1
                if tick % 5 == 0:
                    try:
                        lag = group_lag(
                            settings,
                            settings.kafka_brokers,
                            settings.consumer_group,
                            settings.topic_events,
                            time.time(),
                        ).messages
                    except BrokerUnavailable:
                        pass
                tick += 1
                cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
                samples.append(
                    Sample(
                        time.monotonic(),
                        rss_mib(pids["api"]),
                        rss_mib(pids["app"]),
                        client.info("memory")["used_memory"] / 2**20,
                        lag,
                        cpu,
                    )
                )

        sampler = threading.Thread(target=sample, daemon=True)
        try:
            base = f"http://{settings.api_host}:{settings.api_port}"
            if nice_load:
                os.nice(nice_load)
            asyncio.run(send_steady(base, "bench-write", events[:1000], 500, 2.0))  # warm-up: group join
            deadline = time.monotonic() + 60
            while (
                sum(1 for _ in client.scan_iter("pulse:{*}:seen:*", count=10_000)) < 1000
                and time.monotonic() < deadline
            ):
                time.sleep(0.2)
            seen_count = lambda: sum(1 for _ in client.scan_iter("pulse:{*}:seen:*", count=10_000))  # noqa: E731
            before = seen_count()
            sampler.start()
            times = asyncio.run(
                send_steady(base, "bench-write", events[1000:], rate, seconds, batch_every=request_every)
            )
            load_ended = time.monotonic()
            while seen_count() < before + len(times) and time.monotonic() - load_ended < drain_timeout:
                time.sleep(0.5)
            applied = seen_count() - before
            report.app_exit = app.process.poll() if app.process is not None else None
            report.app_log_tail = app.log_tail()
            report.drained_after_s = time.monotonic() - load_ended if applied >= len(times) else None
            seen_at = watcher.finish() if watcher is not None else {}
        finally:
            stop.set()
            app.stop()
            api.stop()
    if not times:
        raise RuntimeError(
            "the collector accepted no request "
            f"(at most {MAX_BATCH_EVENTS} events each: lower --request-every)"
        )
    report.acknowledged = len(times)
    report.visible = applied
    report.timed_acknowledged = sum(1 for event_id in times if event_id in timed)
    report.timed_seen = sum(1 for event_id in times if event_id in timed and event_id in seen_at)
    start = min(sent for sent, _ in times.values())
    latencies: dict[int, list[float]] = {}
    for event_id in timed & seen_at.keys() & times.keys():
        sent = times[event_id][0]
        latencies.setdefault(int((sent - start) // window), []).append((seen_at[event_id] - sent) * 1000)
    for index in range(int(seconds // window)):
        end = start + (index + 1) * window
        last = ([s for s in samples if s.at <= end] or samples[:1])[-1]
        lags = [s.lag for s in samples if end - window < s.at <= end and s.lag >= 0]
        stats = percentiles(latencies[index]) if latencies.get(index) else {}
        before = ([s for s in samples if s.at <= end - window] or samples[:1])[-1]
        busy = (
            {
                name: 100 * (last.cpu[name] - before.cpu[name]) / max(last.at - before.at, 1e-9)
                for name in last.cpu
            }
            if last.at > before.at
            else {}
        )
        report.windows.append(
            {
                "end": (index + 1) * window,
                "events": sum(1 for sent, _ in times.values() if start + index * window <= sent < end),
                "timed": len(latencies.get(index, [])),
                "p50": stats.get("p50"),
                "p99": stats.get("p99"),
                "api_mib": last.api_mib,
                "app_mib": last.app_mib,
                "redis_mib": last.redis_mib,
                "max_lag": max(lags) if lags else None,
                **{f"{name}_cpu": busy.get(name) for name in CPU_PROCESSES},
            }
        )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=1800)
    parser.add_argument("--window", type=float, default=60)
    parser.add_argument(
        "--request-every", type=float, default=REQUEST_EVERY_S, help="seconds between collector requests"
    )
    parser.add_argument(
        "--time-every", type=int, default=TIME_EVERY, help="time the latency of one event in this many"
    )
    parser.add_argument(
        "--no-latency", action="store_true", help="skip the keyspace-notification latency watcher"
    )
    args = parser.parse_args()
    report = run_soak(
        args.rate,
        args.seconds,
        args.window,
        latency=not args.no_latency,
        request_every=args.request_every,
        time_every=args.time_every,
        nice_load=5,
    )
    print(
        f"{args.rate} events/s for {args.seconds:.0f} s: {report.acknowledged} acknowledged, "
        f"{report.visible} applied; "
        f"backlog drained {report.drained_after_s and f'{report.drained_after_s:.1f} s' or 'NOT'} "
        "after the load stopped; "
        f"{report.timed_seen} of {report.timed_acknowledged} timed events seen by the latency watcher\n"
    )
    print(report.table())
    first, last = report.windows[1] if len(report.windows) > 2 else report.windows[0], report.windows[-1]
    latency = f"p99 {last['p99'] / max(first['p99'], 0.1):.2f}x, " if first["p99"] and last["p99"] else ""
    print(
        f"\nlast window vs the second: {latency}profile app memory "
        f"{last['app_mib'] / first['app_mib']:.2f}x, API memory {last['api_mib'] / first['api_mib']:.2f}x"
    )


if __name__ == "__main__":
    main()
