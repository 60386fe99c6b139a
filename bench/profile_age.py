"""The profile sink's cost per event as profiles age: is the 100th event of a person as cheap as the 5th?

Feeds the same users' events into one sink and one Valkey in chunks, never flushing Redis, and
prints per chunk the events per user so far, Redis's CPU and FCALL time per event, the app's CPU
per event and the commands the functions ran per event (INFO commandstats, reset per chunk). A
soak at a steady rate sends more and more events per profile; this separates that from the
broker and the machine.

Usage: .venv/bin/python -m bench.profile_age [--events 120000] [--users 1000] [--chunk 20000]
       [--mode shipped|on|off] [--rules FILE] [--commands 9] [--checkpoint 2000] [--valkey-arg ARG ...]
``--rules`` replaces the shipped rules file in ``--mode shipped`` (e.g. one rule removed).
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path

import redis

import orchestration.local_services as local_services
from bench.personalization_overhead import MODEL, fifty_rules
from bench.rules_cost import _fcall_usec, _redis_cpu, bench_sink, checked_records
from bench.stack import demo_events
from enrichment.catalog import SAMPLE_CATALOG, read_catalog_csv
from streaming.profile_app.sink import ProfileSink
from streaming.rules.engine import RuleEngine
from streaming.rules.follower import DEFAULT_RULES_FILE
from streaming.rules.loader import load_rules, parse_rules
from streaming.traits.follower import TraitsFollower


def commands_per_event(client: redis.Redis, events: int, shown: int) -> str:
    """The commands the functions ran since the last reset: calls and µs per event, costliest first."""
    rows = [
        (name[len("cmdstat_") :], stats["calls"] / events, stats["usec"] / events)
        for name, stats in client.info("commandstats").items()
        if name != "cmdstat_fcall"
    ]
    rows.sort(key=lambda row: -row[2])
    return " ".join(f"{name} {calls:.2f}x/{us:.1f}µs" for name, calls, us in rows[:shown])


def run_chunks(client: redis.Redis, sink: ProfileSink, records: list, args: argparse.Namespace) -> None:
    """Feed ``records`` in chunks; one line of costs per chunk."""
    print(f"{'events':>8}{'per user':>9}{'redis µs':>9}{'fcall µs':>9}{'app µs':>8}  commands per event")
    for start in range(0, len(records), args.chunk):
        part = records[start : start + args.chunk]
        client.config_resetstat()
        redis_before, app_before = _redis_cpu(client), time.process_time()
        for offset, record in enumerate(part):
            sink.add(record, None, 0, None, "events", 0, start + offset)
            if (offset + 1) % args.checkpoint == 0:
                sink.flush()
        sink.flush()
        n, done = len(part), start + len(part)
        redis_us = (_redis_cpu(client) - redis_before) / n * 1e6
        app_us = (time.process_time() - app_before) / n * 1e6
        print(
            f"{done:>8}{done / args.users:>9.1f}{redis_us:>9.1f}{_fcall_usec(client)[1] / n:>9.1f}"
            f"{app_us:>8.1f}  {commands_per_event(client, n, args.commands)}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=120_000)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--chunk", type=int, default=20_000)
    parser.add_argument("--checkpoint", type=int, default=2_000, help="events per sink flush")
    parser.add_argument("--mode", choices=("shipped", "on", "off"), default="shipped")
    parser.add_argument("--rules", type=Path, default=DEFAULT_RULES_FILE, help="rules file of --mode shipped")
    parser.add_argument("--commands", type=int, default=9, help="commands shown per chunk")
    parser.add_argument(
        "--valkey-arg", action="append", default=[], help="extra valkey-server argument (repeat)"
    )
    args = parser.parse_args()

    rows = read_catalog_csv(SAMPLE_CATALOG)
    traits = TraitsFollower(None, 3600.0, 7.0).prime()
    records = checked_records(demo_events(args.events, args.users), traits)
    if args.mode == "on":
        rules_file = Path(tempfile.mkdtemp()) / "rules.yaml"
        rules_file.write_text(fifty_rules(sorted({r["category"] for r in rows})))
        engine, model = RuleEngine(load_rules(rules_file)), MODEL
    elif args.mode == "shipped":
        engine, model = RuleEngine(load_rules(args.rules)), MODEL
    else:
        engine, model = RuleEngine(parse_rules("rules: []\n")), None
    gc.collect()
    gc.freeze()  # as the profile app does (streaming/app_runner.py)

    plain_argv = local_services._valkey_argv
    local_services._valkey_argv = lambda *a, **k: plain_argv(*a, **k) + args.valkey_arg
    with tempfile.TemporaryDirectory(prefix="pulse-profile-age-") as tmp:
        proc, url = local_services.start_redis(Path(tmp), persist=False)
        try:
            client = redis.Redis.from_url(url)
            run_chunks(client, bench_sink(client, engine, model, traits), records, args)
        finally:
            proc.stop()


if __name__ == "__main__":
    main()
