"""Same-run A/B of the profile app's per-record work (``check_record``) between two code trees.

The end-to-end A/B (bench/ab_commits.py) runs the whole app on a broker; a few microseconds per event
less in validation or trait ops hide in its noise. This one times the pure function alone: one event
file (the demo events, optionally with the request context the collector adds, some referrers and
odd values), then pairs of child processes, one per tree, alternating which goes first. Each child
imports its own tree's ``check_record`` (cwd = the tree), validates and turns every event into its
delta with the shipped traits at one fixed time (``--days-later`` moves it, to cross the windows),
and reports its CPU per event (the best of ``--passes`` passes, ``time.process_time``) and a digest
of every result (delta, error, skip reason, event): both trees must give the same digest.

A side given as a revision is checked out as bench/ab_commits.py does (``/tmp/pulse-ab-<short sha>``).

Usage: .venv/bin/python -m bench.check_record_ab --baseline 5e25112 [--candidate PATH_OR_REV]
       [--pairs 4] [--events 100000] [--users 20000] [--context] [--days-later 0] [--passes 3]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import msgspec

from bench.ab_commits import HERE, PYTHON, RESULT_MARK, resolve_side
from bench.stack import demo_events
from quality.event_contract import EventContractError, parse_timestamp_ms

#: Run in a side's tree: ``python -c CHILD events_file now_ms passes``.
CHILD = r"""
import gc, hashlib, json, sys, time
from pathlib import Path
from enrichment.catalog import SAMPLE_CATALOG, Catalog, categories_from_rows, read_catalog_csv
from streaming.profile_app.pipeline import check_record
from streaming.traits.follower import TraitsFollower

raws = Path(sys.argv[1]).read_bytes().splitlines()
now_ms, passes = int(sys.argv[2]), int(sys.argv[3])
catalog = Catalog(categories_from_rows(read_catalog_csv(SAMPLE_CATALOG)))
traits = TraitsFollower(None, 3600.0, 7.0).prime()  # the shipped traits file
digest = hashlib.sha256()
for raw in raws:
    record = check_record(raw, catalog, traits, now_ms)
    digest.update(repr((record.delta, record.error, record.skipped, record.event)).encode())
gc.collect()
gc.freeze()
times = []
for _ in range(passes):
    start = time.process_time()
    for raw in raws:
        check_record(raw, catalog, traits, now_ms)
    times.append((time.process_time() - start) / len(raws) * 1e6)
module = sys.modules[check_record.__module__].__file__
print("AB-RESULT " + json.dumps({"us": min(times), "digest": digest.hexdigest(), "module": module}))
"""

_GEO = (
    {"country": "DE", "region": "BE", "city": "Berlin"},
    {"country": "FR", "city": "Paris"},
    {"country": "JP"},
)
_DEVICE = (
    {"type": "mobile", "browser": "Mobile Safari", "browser_version": "17.1", "os": "iOS"},
    {"type": "desktop", "browser": "Chrome", "os": "Linux"},
)
_CAMPAIGN = (
    {"source": "newsletter", "medium": "email", "name": "spring", "campaign_id": "c1"},
    {"source": "g"},
)
_ODD = ("https://g.co/x", "ü é", 3, 2.5, True, None, {"a": 1}, [1, "x"], "\u2028")


def with_context(events: list[dict[str, Any]], seed: int = 7) -> None:
    """Give half the events a collector context, some page views a referrer, some odd values."""
    rnd = random.Random(seed)
    for event in events:
        metadata = event.setdefault("metadata", {})
        if rnd.random() < 0.5:
            context: dict[str, Any] = {"device": rnd.choice(_DEVICE), "geo": rnd.choice(_GEO)}
            if rnd.random() < 0.3:
                context["campaign"] = rnd.choice(_CAMPAIGN)
            metadata["context"] = context
        if event["event_type"] == "page_view" and rnd.random() < 0.3:
            metadata["referrer"] = rnd.choice(_ODD)
        if event["event_type"] == "identify" and rnd.random() < 0.5:
            metadata["traits"] = {"plan": rnd.choice(_ODD), "seats": 1.5}


def latest_ms(events: list[dict[str, Any]]) -> int:
    """The latest valid event time of ``events``, in epoch ms."""
    found = 0
    for event in events:
        stamp = event.get("timestamp")
        try:
            found = max(found, parse_timestamp_ms(stamp)) if isinstance(stamp, str) else found
        except EventContractError:
            continue
    return found


def run_child(tree: Path, events_file: Path, now_ms: int, passes: int) -> dict[str, Any]:
    done = subprocess.run(
        [str(PYTHON), "-W", "ignore", "-c", CHILD, str(events_file), str(now_ms), str(passes)],
        cwd=tree,
        capture_output=True,
        text=True,
        check=False,
    )
    found = [line[len(RESULT_MARK) :] for line in done.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if done.returncode or not found:
        raise SystemExit(f"{tree}: child failed:\n{done.stderr[-3000:]}")
    result = json.loads(found[-1])
    if not Path(result["module"]).resolve().is_relative_to(tree):
        raise SystemExit(f"{tree}: imported {result['module']}, not its own tree's")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True)
    parser.add_argument("--candidate", default=str(HERE))
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--context", action="store_true", help="add request contexts and odd values")
    parser.add_argument("--days-later", type=int, default=0, help="judge windows this many days later")
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args()
    sides = {
        "baseline": resolve_side("baseline", args.baseline),
        "candidate": resolve_side("candidate", args.candidate),
    }
    for side in sides.values():
        print(f"{side.name:<9}  {side.revision:<16} {side.tree}")
    events = demo_events(args.events, args.users)
    if args.context:
        with_context(events)
    now_ms = latest_ms(events)  # one moment for both sides (the demo's times follow the clock)
    now_ms += args.days_later * 86_400_000
    ratios, digests = [], set()
    with tempfile.TemporaryDirectory(prefix="pulse-check-record-ab-") as tmp:
        events_file = Path(tmp) / "events.jsonl"
        events_file.write_bytes(b"\n".join(msgspec.json.encode(event) for event in events))
        for index in range(args.pairs):
            order = ["baseline", "candidate"] if index % 2 == 0 else ["candidate", "baseline"]
            us: dict[str, float] = {}
            for name in order:
                result = run_child(sides[name].tree, events_file, now_ms, args.passes)
                us[name] = result["us"]
                digests.add(result["digest"])
            ratios.append(us["candidate"] / us["baseline"])
            print(
                f"pair {index + 1}/{args.pairs} ({order[0]} first): baseline {us['baseline']:.2f} us/event, "
                f"candidate {us['candidate']:.2f} us/event, ratio {ratios[-1]:.3f}",
                flush=True,
            )
    print(
        f"\ncandidate / baseline CPU per event: median {statistics.median(ratios):.3f} "
        f"(min {min(ratios):.3f}, max {max(ratios):.3f}, {len(ratios)} pairs); "
        + ("same results (one digest)" if len(digests) == 1 else f"RESULTS DIFFER ({len(digests)} digests)")
    )


if __name__ == "__main__":
    main()
