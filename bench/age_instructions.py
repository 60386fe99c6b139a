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
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import redis

import orchestration.local_services as local_services
from bench.personalization_overhead import MODEL
from bench.redis_instructions import _NOT_REPLAYED, _name, recording
from bench.rules_cost import bench_sink
from bench.stack import demo_events
from enrichment.catalog import SAMPLE_CATALOG, Catalog, categories_from_rows, read_catalog_csv
from streaming.profile_app.pipeline import check_record
from streaming.profile_app.sink import ProfileSink
from streaming.profiles import functions
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


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _connect(port: int, server: subprocess.Popen[bytes]) -> redis.Redis:
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=600)
    deadline = time.monotonic() + 300
    while True:
        try:
            client.ping()
            return client
        except (redis.ConnectionError, redis.BusyLoadingError):
            if time.monotonic() > deadline:
                server.kill()
                raise
            time.sleep(0.2)


def replay(data: Path, commands: list[tuple[Any, ...]], out: Path) -> tuple[int, dict[str, int]]:
    """Replay ``commands`` under callgrind on a Valkey loaded from ``data``/dump.rdb, counting the
    replay's instructions only; the instructions and the commands the server ran."""
    port = _free_port()
    argv = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}",
        *local_services._valkey_argv(port, data, False),
    ]
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = _connect(port, server)
    for script in Path(functions.__file__).parent.glob("*.lua"):
        if script.name != "update.lua":
            client.script_load(script.read_text())  # decision records are EVALSHA calls
    client.config_resetstat()
    subprocess.run(["callgrind_control", "-i", "on", str(server.pid)], check=True, capture_output=True)
    for start in range(0, len(commands), 200):
        pipe = client.pipeline(transaction=False)
        for command in commands[start : start + 200]:
            pipe.execute_command(*command)
        errors = [r for r in pipe.execute(raise_on_error=False) if isinstance(r, Exception)]
        if errors:
            server.kill()
            raise RuntimeError(f"replayed commands failed: {errors[0]}")
    subprocess.run(["callgrind_control", "-i", "off", str(server.pid)], check=True, capture_output=True)
    calls = {
        name.removeprefix("cmdstat_"): int(entry["calls"])
        for name, entry in client.info("commandstats").items()
        if name not in ("cmdstat_info", "cmdstat_config|resetstat")
    }
    try:
        client.shutdown(nosave=True)
    except redis.ConnectionError:
        pass
    server.wait(120)
    totals = [line for line in out.read_text().splitlines() if line.startswith(("totals:", "summary:"))]
    return int(totals[-1].split()[1]), calls


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

    rows = read_catalog_csv(SAMPLE_CATALOG)
    catalog = Catalog(categories_from_rows(rows))
    traits = TraitsFollower(None, 3600.0, 7.0).prime()
    now_ms = int(time.time() * 1000)
    encode = msgspec.json.encode
    events = demo_events(args.events + args.measure, args.users)
    if args.anonymous:
        for event in events:
            event.pop("user_id", None)
            if event["event_type"] == "identify":
                event["event_type"] = "page_view"
    records = [check_record(encode(e), catalog, traits, now_ms) for e in events]
    records = [record for record in records if record.delta is not None]
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
        total, calls = replay(data, commands, args.out)
    n = len(measured)
    print(
        "  commands run (functions' included), per event: "
        + ", ".join(f"{name} {count / n:.2f}" for name, count in sorted(calls.items(), key=lambda kv: -kv[1]))
    )
    print(f"{args.mode}: {total:,} instructions, {total / n:,.0f} per event ({args.out})")


if __name__ == "__main__":
    main()
