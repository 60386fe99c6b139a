"""Profile app throughput on one process, beside two baselines on the same topic, same run.

- ceiling: a raw confluent-kafka consume + JSON parse loop;
- naive: a Quix app that makes one Redis call per profile operation;
- pulse: the real profile app (validate, enrich, idempotent pipelined Lua sink).

The profile app runs as ``pulse up`` runs it: the shipped traits file (data/traits/traits.yaml,
10 traits) and the built-in trait fields. ``--ab-user-traits`` alternates, in each trial, a run
with no user traits (an empty traits file), to show what the user traits cost in the same run.

Usage: .venv/bin/python -m bench.profile_app_throughput [--events 200000] [--naive-events 20000]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
import uuid

import psutil
import redis
from confluent_kafka import Consumer
from quixstreams import Application
from quixstreams.models import TopicConfig

from bench.stack import demo_events, distinct_valid, fill_topic, local_stack
from core.kafka_config import consumer_tuning
from core.settings import PulseSettings
from enrichment.catalog import SAMPLE_CATALOG, read_catalog_csv
from enrichment.reference_store import CATALOG, publish_reference
from streaming.profile_app.main import build_application


def ceiling(settings: PulseSettings, total: int) -> float:
    """Events/s of a bare consume + json.loads loop (first message to last)."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_brokers,
            "group.id": f"ceiling-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            **consumer_tuning(settings),
        }
    )
    consumer.subscribe([settings.topic_events])
    seen, start = 0, None
    while seen < total:
        for msg in consumer.consume(1000, 1.0):
            if msg.error():
                continue
            if start is None:
                start = time.perf_counter()
            json.loads(msg.value())
            seen += 1
    elapsed = time.perf_counter() - start
    consumer.close()
    return total / elapsed


def naive(settings: PulseSettings, total: int) -> float:
    """Events/s of a Quix app doing one unpipelined Redis call per operation."""
    client = redis.Redis.from_url(settings.redis_url)
    app = Application(
        broker_address=settings.kafka_brokers,
        consumer_group=f"naive-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        consumer_extra_config=consumer_tuning(settings),
        consumer_poll_timeout=0.01,
        use_changelog_topics=False,
        state_dir=settings.data_path / "naive-state",
        loglevel="WARNING",
    )
    topic = app.topic(
        settings.topic_events, value_deserializer="json", config=TopicConfig(settings.topic_partitions, 1)
    )
    state = {"n": 0, "start": None}

    def update(event: dict) -> None:
        if state["start"] is None:
            state["start"] = time.perf_counter()
        uid = event.get("user_id") or event.get("anonymous_id") or "?"
        if event.get("event_id") and client.set(f"naive:{uid}:seen:{event['event_id']}", 1, nx=True, ex=3600):
            client.hincrby(f"naive:{uid}", "event_count", 1)
            client.hincrby(f"naive:{uid}", f"t:{event.get('event_type')}", 1)
            client.hset(f"naive:{uid}", "last_seen", str(event.get("timestamp")))
            category = (event.get("metadata") or {}).get("category")
            if category:
                client.hincrby(f"naive:{uid}", f"v:{category}", 1)
        state["n"] += 1
        if state["n"] >= total:
            state["elapsed"] = time.perf_counter() - state["start"]
            app.stop()

    app.dataframe(topic).update(update)
    app.run()
    return total / state["elapsed"]


def pulse(
    settings: PulseSettings,
    total: int,
    distinct_valid: int,
    *,
    return_sink: bool = False,
    cpu: dict[str, dict[str, float]] | None = None,
):
    """Events/s of the real profile app, from its first Redis write to the last event applied.

    ``cpu``, when given, gets ``process_cpu()`` at both ends of that window ("first", "done")
    and the events it counted (``cpu["events"]["counted"]``). Built and frozen for the garbage
    collector as ``pulse up`` runs it (streaming/app_runner.py, ``frozen_after``): without it,
    full collections walk the benchmark's own event lists too.
    """
    gc.unfreeze()
    app, sink = build_application(settings)
    gc.collect()
    gc.freeze()
    marks: dict[str, float] = {}
    flush = sink.flush

    def timed_flush() -> None:
        if "first" not in marks:
            if cpu is not None:
                cpu["first"] = process_cpu()
            marks["first"] = time.perf_counter()
            marks["first_batch"] = sink.received
        flush()
        if sink.applied >= distinct_valid and "done" not in marks:
            marks["done"] = time.perf_counter()
            if cpu is not None:
                cpu["done"] = process_cpu()
            app.stop()

    sink.flush = timed_flush  # type: ignore[method-assign]
    app.run()
    # The first batch was consumed before the clock started; count only what followed it.
    rate = (total - marks["first_batch"]) / (marks["done"] - marks["first"])
    if cpu is not None:
        cpu["events"] = {"counted": float(total - marks["first_batch"])}
    return (rate, sink) if return_sink else rate


def process_cpu() -> dict[str, float]:
    """CPU seconds (user + system) so far of this process (the app) and of the stack's children."""
    me = psutil.Process()
    used = {"app": sum(me.cpu_times()[:2])}
    for child in me.children(recursive=True):
        try:
            name = "redis" if "valkey" in " ".join(child.cmdline()) else "broker"
            used[name] = used.get(name, 0.0) + sum(child.cpu_times()[:2])
        except psutil.Error:
            continue
    return used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--naive-events", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of the ceiling and of Pulse (the median is reported)"
    )
    parser.add_argument(
        "--partitions", type=int, default=1, help="partitions of the events topic (the embedded default is 1)"
    )
    parser.add_argument(
        "--cpu",
        action="store_true",
        help="print each Pulse trial's CPU per event of the app, the broker and Redis (from /proc)",
    )
    parser.add_argument(
        "--ab-user-traits",
        action="store_true",
        help="also run each trial with an empty traits file (built-in trait fields only)",
    )
    args = parser.parse_args()

    events = demo_events(args.events, args.users)
    distinct = distinct_valid(events)

    with local_stack(args.partitions) as settings:
        publish_reference(
            redis.Redis.from_url(settings.redis_url), CATALOG, read_catalog_csv(SAMPLE_CATALOG), "product_id"
        )
        fill_topic(settings, events)
        print(f"topic filled with {len(events)} events ({len(distinct)} distinct valid), {args.users} users")
        client = redis.Redis.from_url(settings.redis_url)
        ceilings, pulses, bare = [], [], []
        empty_traits = settings.data_path / "no-user-traits.yaml"
        empty_traits.write_text("traits: {}\n")
        naive_rate = naive(settings, args.naive_events)
        for trial in range(args.repeat):
            ceilings.append(ceiling(settings, args.events))
            variants = (
                [("shipped", None), ("none", empty_traits)] if args.ab_user_traits else [("shipped", None)]
            )
            if trial % 2:
                variants.reverse()  # neither variant always runs first
            for name, traits_file in variants:
                client.flushdb()  # every trial applies every event, none is a duplicate of the last
                publish_reference(client, CATALOG, read_catalog_csv(SAMPLE_CATALOG), "product_id")
                trial_settings = settings.model_copy(
                    update={
                        "consumer_group": f"{settings.consumer_group}-{trial}-{name}",
                        "traits_file": traits_file,
                    }
                )
                before = process_cpu()
                rate = pulse(trial_settings, args.events, len(distinct))
                (pulses if name == "shipped" else bare).append(rate)
                if args.cpu:
                    used = {k: v - before.get(k, 0.0) for k, v in process_cpu().items()}
                    print(
                        f"trial {trial} {name}: {rate:,.0f} events/s; CPU µs/event "
                        + ", ".join(f"{k} {1e6 * v / args.events:.1f}" for k, v in used.items())
                        + f", total {1e6 * sum(used.values()) / args.events:.1f}"
                    )
        print("ceiling runs:", ", ".join(f"{r:,.0f}" for r in ceilings))
        print("pulse runs:  ", ", ".join(f"{r:,.0f}" for r in pulses))
        if bare:
            print("no user traits:", ", ".join(f"{r:,.0f}" for r in bare))
            ratios = [p / b for p, b in zip(pulses, bare, strict=True)]
            print("shipped traits / none, per trial:", ", ".join(f"{r:.2f}" for r in ratios))
        results = {
            "ceiling (raw consume+parse)": statistics.median(ceilings),
            "naive Quix + 1 Redis call/op": naive_rate,
            "pulse profile app": statistics.median(pulses),
        }
    pulse_rate = results["pulse profile app"]
    print(f"\n{'run (median of --repeat)':<32}{'events/s':>12}")
    for name, rate in results.items():
        print(f"{name:<32}{rate:>12,.0f}")
    print(f"\npulse / naive   = {pulse_rate / results['naive Quix + 1 Redis call/op']:.1f}x  (target >= 10x)")
    print(f"pulse / ceiling = {pulse_rate / results['ceiling (raw consume+parse)']:.2f}   (target >= 0.2)")
    print(f"pulse           = {pulse_rate:,.0f} events/s (target >= 30,000)")


if __name__ == "__main__":
    main()
