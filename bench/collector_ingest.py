"""Collector ingestion throughput: batch requests to one API worker, until the broker acknowledges.

Printed beside a baseline from the same run: the same events handed to Kafka by a bare
confluent-kafka producer with the collector's durability settings (acks=all, idempotence),
which is the ceiling the collector works towards.

Usage: .venv/bin/python -m bench.collector_ingest [--events 100000] [--batch 500] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import httpx
import msgspec
from confluent_kafka import Producer

from bench.apps import start_app
from bench.stack import demo_events, local_stack
from core.kafka_config import durable_producer_config
from core.settings import PulseSettings


async def post_all(base: str, bodies: list[bytes], concurrency: int) -> tuple[float, int]:
    """POST every body with `concurrency` connections; return (seconds, events accepted)."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    accepted = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal accepted
        while not queue.empty():
            body = queue.get_nowait()
            response = await client.post("/v1/events", content=body)
            response.raise_for_status()
            accepted += response.json()["accepted"]

    limits = httpx.Limits(max_connections=concurrency)
    headers = {"X-Pulse-Key": "bench-write", "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return time.perf_counter() - start, accepted


def bare_producer(settings: PulseSettings, events: list[dict]) -> float:
    """Events/s of a bare durable producer writing the same events (encode + produce + acks)."""
    producer = Producer(durable_producer_config(settings, settings.kafka_brokers))
    producer.produce(settings.topic_triggers, value=b"warm-up")
    producer.flush(10)
    encode = msgspec.json.encode
    start = time.perf_counter()
    for event in events:
        key = event.get("user_id") or event.get("anonymous_id") or ""
        producer.produce(settings.topic_triggers, value=encode(event), key=key.encode())
        producer.poll(0)
    assert producer.flush(60) == 0
    return len(events) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--partitions", type=int, default=1, help="partitions of the events topic (the embedded default is 1)"
    )
    args = parser.parse_args()

    events = demo_events(args.events, users=5000, seed=8)
    bodies = [
        msgspec.json.encode({"events": events[i : i + args.batch]}) for i in range(0, len(events), args.batch)
    ]
    with local_stack(args.partitions) as settings:
        api = start_app(settings, "api")
        try:
            base = f"http://{settings.api_host}:{settings.api_port}"
            asyncio.run(post_all(base, bodies[:4], 1))  # warm-up: connections, first produce
            seconds, accepted = asyncio.run(post_all(base, bodies, args.concurrency))
        finally:
            api.stop()
        ceiling = bare_producer(settings, events)
    rate = len(events) / seconds
    print(f"{'run':<44}{'events/s':>12}")
    print(
        f"{'collector (1 worker, %d-event batches, %d conns)' % (args.batch, args.concurrency):<44}"
        f"{rate:>12,.0f}"
    )
    print(f"{'baseline: bare durable producer':<44}{ceiling:>12,.0f}")
    print(f"\naccepted {accepted} of {len(events)} events (the rest are the demo's invalid ones)")
    print(
        f"collector / bare producer = {rate / ceiling:.2f}; "
        f"collector = {rate:,.0f} events/s (target >= 15,000)"
    )


if __name__ == "__main__":
    main()
