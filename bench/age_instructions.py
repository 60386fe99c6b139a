"""Redis's instructions per event on *aged* profiles, counted by callgrind (deterministic).

``bench.redis_instructions`` replays a young run (a few events per profile); the rules' person
reads grow with the profile's age (``bench.profile_age``). This ages ``--users`` profiles with
``--events`` events through the profile sink on a plain Valkey, saves its data, records the
commands the sink sends for the next ``--measure`` events (checkpoints of ``--checkpoint``),
and replays them on a Valkey started from the saved data under ``valgrind --tool=callgrind``
with instrumentation on for the replay only. Prints the instructions per event, and the
commands the server ran per event. Two builds compare to the instruction on the same events:
run it from each checkout. Needs valgrind.

Usage: .venv/bin/python -m bench.age_instructions [--events 60000] [--users 500] [--measure 2000]
       [--mode shipped|off] [--rules FILE] [--anonymous]
``--anonymous``: nobody identifies (user ids dropped, identify events sent as page views), so
every person is one profile: the control for how much of the growth is stitching.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Any

import redis

import orchestration.local_services as local_services
from bench.personalization_overhead import MODEL
from bench.redis_instructions import _NOT_REPLAYED, _name, instructions, recording
from bench.rules_cost import bench_sink, checked_records
from bench.stack import demo_events
from streaming.profile_app.sink import ProfileSink
from streaming.rules.engine import RuleEngine
from streaming.rules.follower import DEFAULT_RULES_FILE
from streaming.rules.loader import load_rules, parse_rules
from streaming.traits.follower import TraitsFollower


def feed(sink: ProfileSink, records: list[Any], first_offset: int, checkpoint: int) -> None:
    """``records`` through the sink, flushed every ``checkpoint`` events and at the end."""
    for i, record in enumerate(records):
        sink.add(record, None, 0, None, "events", 0, first_offset + i)
        if (i + 1) % checkpoint == 0:
            sink.flush()
    sink.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=60_000, help="events that age the profiles")
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--measure", type=int, default=2_000, help="events replayed under callgrind")
    parser.add_argument("--checkpoint", type=int, default=2_000, help="events per sink flush")
    parser.add_argument("--mode", choices=("shipped", "off"), default="shipped")
    parser.add_argument("--rules", type=Path, default=DEFAULT_RULES_FILE, help="rules file of --mode shipped")
    parser.add_argument("--anonymous", action="store_true", help="no user ids: no stitched people")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "pulse-age-callgrind.out")
    args = parser.parse_args()

    traits = TraitsFollower(None, 3600.0, 7.0).prime()
    events = demo_events(args.events + args.measure, args.users)
    if args.anonymous:
        for event in events:
            event.pop("user_id", None)
            if event["event_type"] == "identify":
                event["event_type"] = "page_view"
    records = checked_records(events, traits)
    if args.mode == "shipped":
        engine, model = RuleEngine(load_rules(args.rules)), MODEL
    else:
        engine, model = RuleEngine(parse_rules("rules: []\n")), None
    aging, measured = records[: -args.measure], records[-args.measure :]

    with tempfile.TemporaryDirectory(prefix="pulse-age-instructions-") as tmp:
        proc, url = local_services.start_redis(Path(tmp) / "aging", persist=False)
        try:
            client = redis.Redis.from_url(url)
            sink = bench_sink(client, engine, model, traits)
            feed(sink, aging, 0, args.checkpoint)
            client.save()
            saved = Path(client.config_get("dir")["dir"]) / "dump.rdb"
            data = Path(tmp) / "replay"
            data.mkdir()
            shutil.copy(saved, data / "dump.rdb")
            with recording() as sent:
                feed(sink, measured, len(aging), args.checkpoint)
        finally:
            proc.stop()
        commands = [c for c in sent if _name(c[0]).upper() not in _NOT_REPLAYED]
        print(
            f"aged {len(aging)} events over {args.users} users ({len(aging) / args.users:.1f} per user); "
            f"replaying {len(commands)} commands for {len(measured)} events under callgrind...",
            flush=True,
        )
        total, calls = instructions(commands, args.out, data)
    n = len(measured)
    print(
        "  commands run (functions' included), per event: "
        + ", ".join(f"{name} {count / n:.2f}" for name, count in sorted(calls.items(), key=lambda kv: -kv[1]))
    )
    print(f"{args.mode}: {total:,} instructions, {total / n:,.0f} per event ({args.out})")


if __name__ == "__main__":
    main()
