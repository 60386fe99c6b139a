"""End-to-end latency: collector 202 -> profile visible in Redis, at a steady event rate.

Real processes: embedded broker and Redis, `pulse run api`, `pulse run profile-app`. Redis
keyspace notifications tell the moment each event's ``event_id`` marker is written, which
happens in the same atomic script call as the profile update. Printed beside a baseline
measured in the same run: bare Kafka produce -> consume latency (no HTTP, no processing).

Usage: .venv/bin/python -m bench.e2e_latency [--rate 2000] [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import threading
import time
import uuid

import httpx
import msgspec
import redis
from confluent_kafka import Consumer, Producer

from bench.apps import start_app
from bench.stack import demo_events, local_stack
from core.kafka_config import consumer_tuning, durable_producer_config
from core.settings import PulseSettings
from enrichment.catalog import SAMPLE_CATALOG, read_catalog_csv
from enrichment.reference_store import CATALOG, publish_reference
from streaming.profiles.keys import profile_keys

BATCH_EVERY_S = 0.01
WINDOW_S = 10


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "p50": pick(0.50),
        "p95": pick(0.95),
        "p99": pick(0.99),
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
    }


def watch_visibility(
    url: str, ready: mp.Event, stop: mp.Event, results: mp.Queue, id_prefix: str = ""
) -> None:
    """In its own process (so the load generator cannot delay it): record when each
    event_id marker appears in Redis, via keyspace notifications; CLOCK_MONOTONIC is
    shared by all processes of the machine.

    With ``id_prefix`` only markers of event ids starting with it are reported: Redis matches
    the pattern itself, so a sample of the events is timed at a rate the watcher keeps up with.
    """
    client = redis.Redis.from_url(url)
    client.config_set("notify-keyspace-events", "K$")
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe(f"__keyspace@0__:pulse:*:seen:{id_prefix}*")
    seen_at: dict[str, float] = {}
    ready.set()
    while not stop.is_set():
        message = pubsub.get_message(timeout=0.05)
        if message is not None:
            seen_at.setdefault(message["channel"].decode().rsplit(":seen:", 1)[1], time.monotonic())
    results.put(seen_at)


class VisibilityWatcher:
    """Runs ``watch_visibility`` in a child process; ``finish()`` returns event_id -> time seen."""

    def __init__(self, url: str, id_prefix: str = "") -> None:
        ctx = mp.get_context("spawn")
        self._ready, self._stop, self._results = ctx.Event(), ctx.Event(), ctx.Queue()
        self._process = ctx.Process(
            target=watch_visibility,
            args=(url, self._ready, self._stop, self._results, id_prefix),
            daemon=True,
        )
        self._process.start()
        self._ready.wait(30)

    @property
    def pid(self) -> int:
        return self._process.pid or 0

    def finish(self) -> dict[str, float]:
        self._stop.set()
        seen_at = self._results.get(timeout=60)
        self._process.join(10)
        return seen_at


async def post_events(
    client: httpx.AsyncClient, batch: list[dict], refused: list[float] | None = None
) -> bool:
    """POST one request; True on 202. With ``refused``, a 503 is retried after its ``Retry-After``
    (as the SDKs do) and the time of each one is appended to it."""
    body = msgspec.json.encode({"events": batch})
    while True:
        response = await client.post("/v1/events", content=body, headers={"Content-Type": "application/json"})
        if response.status_code != 503 or refused is None:
            return response.status_code == 202
        refused.append(time.monotonic())
        await asyncio.sleep(float(response.headers.get("Retry-After", "1")))


async def send_steady(
    base: str,
    key: str,
    events: list[dict],
    rate: int,
    seconds: float,
    batch_every: float = BATCH_EVERY_S,
    refused: list[float] | None = None,
) -> dict[str, tuple[float, float]]:
    """Send `rate` events/s in one request every ``batch_every`` s; return event_id -> (first sent,
    acknowledged). With ``refused``, 503s are retried (``post_events``).
    """
    per_batch = max(1, int(rate * batch_every))
    times: dict[str, tuple[float, float]] = {}
    async with httpx.AsyncClient(base_url=base, headers={"X-Pulse-Key": key}, timeout=30) as client:
        start = time.monotonic()
        tick = 0
        pending: set[asyncio.Task] = set()
        index = 0

        async def post(batch: list[dict]) -> None:
            sent = time.monotonic()
            if await post_events(client, batch, refused):
                acked = time.monotonic()
                for event in batch:
                    times[event["event_id"]] = (sent, acked)

        while time.monotonic() - start < seconds and index < len(events):
            batch = events[index : index + per_batch]
            index += per_batch
            task = asyncio.create_task(post(batch))
            pending.add(task)
            task.add_done_callback(pending.discard)
            tick += 1
            await asyncio.sleep(max(0.0, start + tick * batch_every - time.monotonic()))
        await asyncio.gather(*pending)
    return times


def kafka_baseline(settings: PulseSettings, rate: int, seconds: float) -> list[tuple[float, float]]:
    """(seconds into the run, produce -> consume ms) of bare Kafka at the same rate, fresh topic."""
    topic = settings.topic_events
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_brokers,
            "group.id": f"lat-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "latest",
            **consumer_tuning(settings),
        }
    )
    consumer.subscribe([topic])
    while not consumer.assignment():
        consumer.poll(0.1)
    producer = Producer(durable_producer_config(settings, settings.kafka_brokers))  # as the collector
    producer.produce(settings.topic_dlq, value=b"warm-up")  # the first idempotent produce waits ~0.5 s
    producer.flush(10)
    latencies: list[tuple[float, float]] = []
    stop = time.monotonic() + seconds
    per_batch = max(1, int(rate * BATCH_EVERY_S))

    def consume() -> None:
        while time.monotonic() < stop + 2:
            msg = consumer.poll(0.05)
            if msg is not None and msg.error() is None:
                produced = float(msg.value())
                latencies.append((produced - start, (time.monotonic() - produced) * 1000))

    start = time.monotonic()
    reader = threading.Thread(target=consume)
    reader.start()
    tick = 0
    while time.monotonic() < stop:
        for i in range(per_batch):
            producer.produce(
                topic, value=repr(time.monotonic()).encode(), key=f"user-{tick % 997}-{i}".encode()
            )
        producer.poll(0)
        tick += 1
        time.sleep(max(0.0, start + tick * BATCH_EVERY_S - time.monotonic()))
    producer.flush(10)
    reader.join()
    consumer.close()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=2000, help="events per second")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument(
        "--partitions", type=int, default=1, help="partitions of the events topic (the embedded default is 1)"
    )
    args = parser.parse_args()

    events = [e for e in demo_events(int(args.rate * args.seconds) + 1000, args.users, seed=3)]
    # Only distinct, valid events become visible; duplicates and invalid ones are not timed.
    from quality.event_contract import EventContractError, validate_event

    unique: dict[str, dict] = {}
    for event in events:
        try:
            validate_event(event)
        except EventContractError:
            continue
        unique.setdefault(event["event_id"], event)
    events = list(unique.values())

    # Baseline first, on its own fresh broker, for as long and as fast as the Pulse run:
    # the local broker's own latency grows as it holds more data (see RESULTS.md).
    with local_stack(args.partitions) as settings:
        baseline = kafka_baseline(settings, args.rate, args.seconds)
    with local_stack(args.partitions) as settings:
        publish_reference(
            redis.Redis.from_url(settings.redis_url), CATALOG, read_catalog_csv(SAMPLE_CATALOG), "product_id"
        )
        watcher = VisibilityWatcher(settings.redis_url)
        api = start_app(settings, "api")
        app = start_app(settings, "profile-app")
        try:
            base = f"http://{settings.api_host}:{settings.api_port}"
            # The load generator stands in for clients on other machines: keep it from
            # starving Pulse's processes of the 2 shared cores.
            os.nice(5)
            # Warm up: the group join and first idempotent produce are not part of steady state.
            asyncio.run(send_steady(base, "bench-write", events[:200], 200, 1.0))
            probe = redis.Redis.from_url(settings.redis_url)
            deadline = time.monotonic() + 60
            while not probe.exists(
                profile_keys(events[199].get("user_id") or events[199]["anonymous_id"]).seen_prefix
                + events[199]["event_id"]
            ):
                assert time.monotonic() < deadline, "the profile app did not start"
                time.sleep(0.1)
            times = asyncio.run(send_steady(base, "bench-write", events[200:], args.rate, args.seconds))
            time.sleep(3)
            seen_at = watcher.finish()
        finally:
            app.stop()
            api.stop()

    from_ack, from_send, missing, early = [], [], 0, 0
    first_sent = min(sent for sent, _ in times.values())
    windows: dict[int, list[float]] = {}
    for event_id, (sent, acked) in times.items():
        seen = seen_at.get(event_id)
        if seen is None:
            missing += 1
            continue
        early += seen < acked
        from_ack.append(max(0.0, seen - acked) * 1000)
        from_send.append((seen - sent) * 1000)
        windows.setdefault(int((sent - first_sent) // WINDOW_S), []).append(from_ack[-1])
    baseline_windows: dict[int, list[float]] = {}
    for offset, latency in baseline:
        baseline_windows.setdefault(int(offset // WINDOW_S), []).append(latency)
    acked_rate = len(times) / args.seconds
    print(
        f"events acknowledged: {len(times)} (~{acked_rate:,.0f}/s); not visible: {missing}; "
        f"visible before their 202 arrived: {early}"
    )
    rows = {
        "202 -> visible in Redis": percentiles(from_ack),
        "request sent -> visible": percentiles(from_send),
        "baseline: bare Kafka produce->consume": percentiles([latency for _, latency in baseline]),
    }
    print(f"\n{'latency (ms)':<40}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>9}")
    for name, p in rows.items():
        print(f"{name:<40}{p['p50']:>8.1f}{p['p95']:>8.1f}{p['p99']:>8.1f}{p['max']:>9.1f}")
    print(
        f"\n{'p99 per %ds window (ms)' % WINDOW_S:<40}"
        + "".join(f"{f'{w * WINDOW_S}s':>8}" for w in sorted(windows))
    )
    print(
        f"{'pulse 202 -> visible':<40}"
        + "".join(f"{percentiles(windows[w])['p99']:>8.1f}" for w in sorted(windows))
    )
    print(
        f"{'bare Kafka produce->consume':<40}"
        + "".join(
            f"{percentiles(baseline_windows[w])['p99'] if w in baseline_windows else float('nan'):>8.1f}"
            for w in sorted(windows)
        )
    )
    ratio = rows["202 -> visible in Redis"]["p99"] / max(
        rows["baseline: bare Kafka produce->consume"]["p99"], 0.001
    )
    print(
        f"\np99 202->visible = {rows['202 -> visible in Redis']['p99']:.1f} ms (target <= 50 ms); "
        f"{ratio:.1f}x the bare-Kafka p99"
    )


if __name__ == "__main__":
    main()
