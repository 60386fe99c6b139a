"""CPU per event of the profile sink with and without 50 rules and intent scoring, without Kafka.

The end-to-end benchmark (bench/personalization_overhead.py) runs the whole app on a broker,
so its ratios move with everything else the machine does. This one feeds the same demo events,
validated beforehand, straight into the profile app's sink (``ProfileSink``) in checkpoints of
``--checkpoint`` events, and measures, per mode, interleaved ``--repeat`` times on one Valkey:
the app's CPU per event (this process), Redis CPU per event (``INFO cpu``), and the update
function's time per event (``INFO commandstats``, FCALL). "off" has no rules and no intent
model; "on" has the 50 rules of personalization_overhead and its intent model; "shipped" has
what `pulse up` runs: the shipped rules (data/rules/rules.yaml) and that intent model (the shape
the Dagster asset publishes; before its first run `pulse up` scores with none, as
"shipped-rules"); "model" has the model only. Each trial
starts from an empty Redis, as there. No triggers topic is written (the sink's producer is
never called; invalid events are left out): the decisions are counted, recorded in Redis,
and compared between trials.

Usage: .venv/bin/python -m bench.rules_cost [--events 60000] [--checkpoint 5000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import psutil
import redis
from confluent_kafka import Producer

from bench.personalization_overhead import MODEL, fifty_rules
from bench.stack import demo_events
from enrichment.catalog import SAMPLE_CATALOG, Catalog, categories_from_rows, read_catalog_csv
from orchestration.local_services import start_redis
from streaming.profile_app.pipeline import CheckedRecord, check_record
from streaming.profile_app.sink import ProfileSink
from streaming.profiles.store import RedisProfileStore
from streaming.rules.engine import RuleEngine
from streaming.rules.follower import DEFAULT_RULES_FILE
from streaming.rules.loader import load_rules, parse_rules
from streaming.traits.follower import TraitsFollower


def _fcall_usec(client: redis.Redis) -> tuple[int, int]:
    """(calls, microseconds) of FCALL so far."""
    stats = client.info("commandstats").get("cmdstat_fcall", {})
    return int(stats.get("calls", 0)), int(stats.get("usec", 0))


def _redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def checked_records(events: list[dict], traits: TraitsFollower) -> list[CheckedRecord]:
    """``events`` as the profile app checks them (the sample catalog), dead letters left out."""
    catalog = Catalog(categories_from_rows(read_catalog_csv(SAMPLE_CATALOG)))
    now_ms = int(time.time() * 1000)
    encode = msgspec.json.encode
    records = [check_record(encode(event), catalog, traits, now_ms) for event in events]
    return [record for record in records if record.delta is not None]


def bench_sink(client: redis.Redis, engine: RuleEngine, model: Any, traits: Any) -> ProfileSink:
    """A profile sink on ``client`` as the profile app makes it, with a producer never produced to."""
    store = RedisProfileStore(
        client,
        dedupe_window_seconds=7 * 24 * 3600,
        session_gap_ms=1800 * 1000,
        intent_model=lambda: model,
        traits=lambda: traits,
    )
    producer = Producer({"bootstrap.servers": "127.0.0.1:9", "log_level": 0})
    return ProfileSink(store, producer, "unused-dlq", rules=lambda: engine)


def run_mode(
    client: redis.Redis,
    records: list[CheckedRecord],
    engine: RuleEngine,
    model: Any,
    traits: Any,
    checkpoint: int,
) -> dict[str, float]:
    """Feed the records into a fresh sink on an empty Redis; CPU and time per event."""
    client.flushdb()
    client.config_resetstat()
    sink = bench_sink(client, engine, model, traits)
    redis_before = _redis_cpu(client)
    app_before = time.process_time()
    start = time.perf_counter()
    for offset, record in enumerate(records):
        sink.add(record, None, 0, None, "events", 0, offset)
        if (offset + 1) % checkpoint == 0:
            sink.flush()
    sink.flush()
    wall = time.perf_counter() - start
    app = time.process_time() - app_before
    redis_cpu = _redis_cpu(client) - redis_before
    calls, usec = _fcall_usec(client)
    n = len(records)
    return {
        "events/s": n / wall,
        "app us/ev": app / n * 1e6,
        "redis us/ev": redis_cpu / n * 1e6,
        "fcall us/ev": usec / n,
        "fcalls": calls,
        "decisions": sink.decisions_fired,
        "applied": sink.applied,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--checkpoint", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--modes", default="off,on")
    args = parser.parse_args()

    rows = read_catalog_csv(SAMPLE_CATALOG)
    traits = TraitsFollower(None, 3600.0, 7.0).prime()
    records = checked_records(demo_events(args.events, args.users), traits)
    rules_file = Path(tempfile.mkdtemp()) / "rules.yaml"
    rules_file.write_text(fifty_rules(sorted({r["category"] for r in rows})))
    on = RuleEngine(load_rules(rules_file))
    off = RuleEngine(parse_rules("rules: []\n"))
    shipped = RuleEngine(load_rules(DEFAULT_RULES_FILE))
    engines = {
        "off": (off, None),
        "on": (on, MODEL),
        "shipped": (shipped, MODEL),
        "shipped-rules": (shipped, None),
        "model": (off, MODEL),
    }
    # As the profile app freezes what it holds (streaming/app_runner.py): full collections would
    # otherwise walk the 60,000 records held here, in "on" (more garbage) more often than in "off".
    gc.collect()
    gc.freeze()
    modes = args.modes.split(",")
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory(prefix="pulse-rules-cost-") as tmp:
        proc, url = start_redis(Path(tmp), persist=False)
        try:
            client = redis.Redis.from_url(url)
            for trial in range(args.repeat):
                for mode in modes:
                    engine, model = engines[mode]
                    found = run_mode(client, records, engine, model, traits, args.checkpoint)
                    results[mode].append(found)
                    print(
                        f"trial {trial} {mode:>4}: "
                        + ", ".join(
                            f"{k} {v:,.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in found.items()
                        ),
                        flush=True,
                    )
        finally:
            proc.stop()
    print(f"\nload average {psutil.getloadavg()[0]:.2f}; medians:")
    for mode in modes:
        keys = results[mode][0].keys()
        print(
            f"{mode:>4}: "
            + ", ".join(f"{k} {statistics.median(r[k] for r in results[mode]):,.1f}" for k in keys)
        )
    if "on" in results and "off" in results:
        paired = [a["events/s"] / b["events/s"] for a, b in zip(results["on"], results["off"], strict=True)]
        print("on/off events/s per trial: " + ", ".join(f"{r:.2f}" for r in paired))


if __name__ == "__main__":
    main()
