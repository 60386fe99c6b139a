"""Same-run, interleaved A/B of the profile app's throughput between two code trees.

On a noisy machine (two shared cores here, about 1.5x between trials of the same code), numbers from
separate runs of bench/profile_app_throughput.py cannot be compared. This script starts one broker
and one Redis, fills one topic once, then runs pairs of trials, one per side, alternating which side
goes first, and reports the median of the per-pair ratios candidate / baseline: of the rates, and
of the app process's CPU per event over the same window (``pulse(cpu=...)``; less moved by other
load on the machine than the rate).

Each trial is a subprocess whose working directory is that side's tree, so it imports that tree's own
``bench.profile_app_throughput.pulse`` and ``core.settings.PulseSettings``: it measures the real profile
app from its first Redis write to the last event applied, as that bench does. A side given as a git
revision is checked out with ``git worktree add --detach /tmp/pulse-ab-<short sha>`` (reused when it
is there already). Both sides run with the same venv python.

Before every trial the parent flushes Redis and republishes the sample catalog, and the trial gets a
fresh consumer group, so every trial applies every event. The child gets only what it cannot default:
PULSE_DATA_DIR, PULSE_KAFKA_BROKERS, PULSE_REDIS_URL, PULSE_CONSUMER_GROUP, the bench topic names and
partitions, and (as bench.stack.local_stack and bench/profile_app_throughput.py do) an empty rules file.
Everything else (the shipped traits file, the built-in trait fields, ...) is each tree's default, as
``pulse up`` runs it; PULSE_* variables of the calling shell are not passed on.

Usage:
    .venv/bin/python -m bench.ab_commits --baseline 9b8295e
        [--candidate PATH_OR_REV]   (default: this working tree)
        [--pairs 5] [--events 200000] [--users 20000] [--partitions 1]
        [--shipped-rules] [--static] [--trial-timeout 600] [--json]

With --static both sides run the app assigned statically, as `pulse up` does (no group join).

With --json the progress and the table go to stderr and one JSON summary to stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import msgspec
import redis

from bench.stack import demo_events, fill_topic, local_stack
from core.settings import PulseSettings
from enrichment.catalog import SAMPLE_CATALOG, read_catalog_csv
from enrichment.reference_store import CATALOG, publish_reference

#: The tree this script lives in (the default candidate).
HERE = Path(__file__).resolve().parents[1]
#: Both sides run with this interpreter (the project's venv).
PYTHON = HERE / ".venv" / "bin" / "python"
RESULT_MARK = "AB-RESULT "

#: Run in a side's tree (``python -c``, cwd = the tree, so '' on sys.path is that tree and wins over the
#: editable install's /work/main). Only uses APIs present in old and new trees: bench.stack.distinct_valid,
#: bench.profile_app_throughput.pulse(settings, total, distinct_valid) and PulseSettings().
CHILD_CODE = r"""
import json, os, sys
from pathlib import Path

tree = Path(os.getcwd()).resolve()
mode = sys.argv[1]

def check(module):
    path = Path(module.__file__).resolve()
    if tree not in path.parents:
        raise SystemExit(f"{module.__name__} imported from {path}, not from {tree}")
    return str(path)

if mode == "count":
    import msgspec
    import bench.stack as stack
    check(stack)
    events = [msgspec.json.decode(line) for line in Path(sys.argv[2]).read_bytes().splitlines() if line]
    result = {"events": len(events), "distinct_valid": len(stack.distinct_valid(events))}
else:
    total, distinct = int(sys.argv[2]), int(sys.argv[3])
    import bench.profile_app_throughput as bench_module
    if len(sys.argv) > 4 and sys.argv[4] == "static":  # as `pulse up` runs it: no group join
        from streaming.static_assignment import assign_statically
        build = bench_module.build_application
        def build_statically(settings):
            app, sink = build(settings)
            return assign_statically(app), sink
        bench_module.build_application = build_statically
    import core.settings as settings_module
    import streaming.profile_app.main as app_module
    check(settings_module)
    check(app_module)
    settings = settings_module.PulseSettings()
    import inspect
    cpu = {}
    if "cpu" in inspect.signature(bench_module.pulse).parameters:
        rate = bench_module.pulse(settings, total, distinct, cpu=cpu)
    else:
        rate = bench_module.pulse(settings, total, distinct)
    result = {
        "rate": rate,
        "app_cpu_us": (
            1e6 * (cpu["done"]["app"] - cpu["first"]["app"]) / cpu["events"]["counted"] if cpu else None
        ),
        "module": check(bench_module),
        "consumer_group": settings.consumer_group,
        "traits_file": str(getattr(settings, "traits_file", None)),
    }
print("AB-RESULT " + json.dumps(result), flush=True)
"""


@dataclass(frozen=True)
class Side:
    """One code tree under test."""

    name: str  # "baseline" or "candidate"
    spec: str  # what was asked for: a path or a revision
    tree: Path
    revision: str  # the tree's HEAD (short), plus "+dirty" for a working tree with changes


@dataclass
class Pair:
    index: int
    first: str
    baseline: float
    candidate: float
    #: The app process's CPU (user + system) per event over the same window, when both sides tell it.
    baseline_cpu_us: float | None = None
    candidate_cpu_us: float | None = None

    @property
    def ratio(self) -> float:
        return self.candidate / self.baseline

    @property
    def cpu_ratio(self) -> float | None:
        if self.baseline_cpu_us is None or self.candidate_cpu_us is None:
            return None
        return self.candidate_cpu_us / self.baseline_cpu_us


def git(*args: str, cwd: Path = HERE) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def resolve_side(name: str, spec: str) -> Side:
    """A directory is used as it is; anything else is a revision checked out in a detached worktree."""
    path = Path(spec).expanduser()
    if path.is_dir():
        tree = path.resolve()
        head = git("rev-parse", "--short", "HEAD", cwd=tree)
        dirty = bool(git("status", "--porcelain", "--untracked-files=no", cwd=tree))
        return Side(name, spec, tree, head + ("+dirty" if dirty else ""))
    sha = git("rev-parse", "--verify", f"{spec}^{{commit}}")
    short = git("rev-parse", "--short", sha)
    tree = Path(f"/tmp/pulse-ab-{short}")
    if tree.exists():
        head = git("rev-parse", "HEAD", cwd=tree)
        if head != sha:
            raise SystemExit(f"{tree} exists at {head[:12]}, not at {short}: remove it or pass a path")
    else:
        git("worktree", "add", "--detach", str(tree), sha)
    return Side(name, spec, tree, short)


def child_env(settings: PulseSettings, consumer_group: str, rules_file: Path | None) -> dict[str, str]:
    """The calling environment without PULSE_* (and anything that would move sys.path), plus the trial's."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("PULSE_") and key not in ("PYTHONPATH", "PYTHONSAFEPATH", "PYTHONHOME")
    }
    env.update(
        {
            "PULSE_DATA_DIR": str(settings.data_path),
            "PULSE_KAFKA_BROKERS": str(settings.kafka_brokers),
            "PULSE_REDIS_URL": str(settings.redis_url),
            "PULSE_CONSUMER_GROUP": consumer_group,
            "PULSE_TOPIC_EVENTS": settings.topic_events,
            "PULSE_TOPIC_DLQ": settings.topic_dlq,
            "PULSE_TOPIC_TRIGGERS": settings.topic_triggers,
            "PULSE_TOPIC_PROFILE_CHANGES": settings.topic_profile_changes,
            "PULSE_TOPIC_PARTITIONS": str(settings.topic_partitions),
        }
    )
    if rules_file is not None:
        env["PULSE_RULES_FILE"] = str(rules_file)
    return env


def run_child(side: Side, args: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    """Run CHILD_CODE in the side's tree; its last AB-RESULT line, or SystemExit with its stderr."""
    try:
        done = subprocess.run(
            [str(PYTHON), "-c", CHILD_CODE, *args],
            cwd=side.tree,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:  # subprocess.run kills the child it started
        raise SystemExit(f"{side.name} ({side.revision}) {args[0]} timed out after {timeout:.0f}s") from exc
    results = [line[len(RESULT_MARK) :] for line in done.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if done.returncode != 0 or not results:
        tail = "\n".join((done.stderr or done.stdout).splitlines()[-30:])
        raise SystemExit(f"{side.name} ({side.revision}) {args[0]} failed (exit {done.returncode}):\n{tail}")
    return json.loads(results[-1])


def geometric_mean(values: list[float]) -> float:
    return math.exp(statistics.fmean(math.log(v) for v in values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="revision (or directory) of the baseline tree")
    parser.add_argument(
        "--candidate", default=str(HERE), help=f"revision or directory of the candidate (default {HERE})"
    )
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=1, help="partitions of the events topic")
    parser.add_argument(
        "--shipped-rules",
        action="store_true",
        help="each side's default rules file instead of an empty rule set (the throughput bench's)",
    )
    parser.add_argument(
        "--static",
        action="store_true",
        help="the app assigned statically as `pulse up` runs it (streaming/static_assignment.py)",
    )
    parser.add_argument("--trial-timeout", type=float, default=600.0, help="seconds before a trial is killed")
    parser.add_argument("--json", action="store_true", help="one JSON summary on stdout, the rest on stderr")
    args = parser.parse_args()
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")
    out: TextIO = sys.stderr if args.json else sys.stdout

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    sides = {
        "baseline": resolve_side("baseline", args.baseline),
        "candidate": resolve_side("candidate", args.candidate),
    }
    for side in sides.values():
        say(f"{side.name:<9}  {side.revision:<16} {side.tree}")

    events = demo_events(args.events, args.users)
    with local_stack(args.partitions) as settings:
        rules_file = None if args.shipped_rules else settings.rules_file
        events_file = settings.data_path / "ab-events.jsonl"
        events_file.write_bytes(b"\n".join(msgspec.json.encode(event) for event in events))
        # Each side counts the events its own contract accepts: its app stops when it has applied them.
        distinct: dict[str, int] = {}
        for name, side in sides.items():
            env = child_env(settings, "unused", rules_file)
            counted = run_child(side, ["count", str(events_file)], env, args.trial_timeout)
            distinct[name] = counted["distinct_valid"]
        fill_topic(settings, events)
        say(
            f"topic filled with {len(events)} events, {args.users} users; distinct valid: "
            + ", ".join(f"{name} {count}" for name, count in distinct.items())
        )
        client = redis.Redis.from_url(settings.redis_url)
        catalog_rows = read_catalog_csv(SAMPLE_CATALOG)
        pairs: list[Pair] = []
        imported: dict[str, dict[str, str]] = {}  # what each side's child ran: its bench module, traits file
        for index in range(args.pairs):
            order = ["baseline", "candidate"] if index % 2 == 0 else ["candidate", "baseline"]
            rates: dict[str, float] = {}
            cpus: dict[str, float | None] = {}
            for name in order:
                client.flushdb()  # every trial applies every event, none is a duplicate of the last
                publish_reference(client, CATALOG, catalog_rows, "product_id")
                group = f"{settings.consumer_group}-ab{index}-{name}-{uuid.uuid4().hex[:4]}"
                result = run_child(
                    sides[name],
                    ["trial", str(len(events)), str(distinct[name]), "static" if args.static else "joined"],
                    child_env(settings, group, rules_file),
                    args.trial_timeout,
                )
                rates[name] = result["rate"]
                cpus[name] = result.get("app_cpu_us")
                imported.setdefault(name, {k: result[k] for k in ("module", "traits_file")})
            pair = Pair(index + 1, order[0], rates["baseline"], rates["candidate"])
            pair.baseline_cpu_us, pair.candidate_cpu_us = cpus["baseline"], cpus["candidate"]
            pairs.append(pair)
            cpu_text = (
                ""
                if pair.cpu_ratio is None
                else f"; app CPU {pair.baseline_cpu_us:.1f} vs {pair.candidate_cpu_us:.1f} us/event, "
                f"ratio {pair.cpu_ratio:.3f}"
            )
            say(
                f"pair {pair.index}/{args.pairs} ({pair.first} first): baseline {pair.baseline:,.0f}/s, "
                f"candidate {pair.candidate:,.0f}/s, ratio {pair.ratio:.3f}" + cpu_text
            )

    ratios = [pair.ratio for pair in pairs]
    cpu_ratios = [r for r in (pair.cpu_ratio for pair in pairs) if r is not None]
    summary = {
        "baseline": {**asdict(sides["baseline"]), "tree": str(sides["baseline"].tree)},
        "candidate": {**asdict(sides["candidate"]), "tree": str(sides["candidate"].tree)},
        "events": len(events),
        "users": args.users,
        "partitions": args.partitions,
        "rules": "shipped" if args.shipped_rules else "empty",
        "static": args.static,
        "distinct_valid": distinct,
        "children": imported,
        "pairs": [{**asdict(pair), "ratio": pair.ratio, "cpu_ratio": pair.cpu_ratio} for pair in pairs],
        "median_cpu_ratio": statistics.median(cpu_ratios) if cpu_ratios else None,
        "median_ratio": statistics.median(ratios),
        "geomean_ratio": geometric_mean(ratios),
        "min_ratio": min(ratios),
        "max_ratio": max(ratios),
        "median_baseline_rate": statistics.median(pair.baseline for pair in pairs),
        "median_candidate_rate": statistics.median(pair.candidate for pair in pairs),
    }
    say()
    say(f"{'pair':<6}{'first':<11}{'baseline/s':>12}{'candidate/s':>13}{'ratio':>8}")
    for pair in pairs:
        say(
            f"{pair.index:<6}{pair.first:<11}{pair.baseline:>12,.0f}{pair.candidate:>13,.0f}{pair.ratio:>8.3f}"
        )
    say()
    say(
        f"candidate / baseline: median {summary['median_ratio']:.3f}, "
        f"geometric mean {summary['geomean_ratio']:.3f}"
    )
    say(f"  (min {summary['min_ratio']:.3f}, max {summary['max_ratio']:.3f}, {len(pairs)} pairs)")
    say(
        f"median rate: baseline {summary['median_baseline_rate']:,.0f}/s ({sides['baseline'].revision}), "
        f"candidate {summary['median_candidate_rate']:,.0f}/s ({sides['candidate'].revision})"
    )
    if cpu_ratios:
        say(
            f"app CPU per event, candidate / baseline: median {summary['median_cpu_ratio']:.3f} "
            f"(min {min(cpu_ratios):.3f}, max {max(cpu_ratios):.3f}); medians "
            f"{statistics.median(p.baseline_cpu_us for p in pairs if p.cpu_ratio):.1f} vs "
            f"{statistics.median(p.candidate_cpu_us for p in pairs if p.cpu_ratio):.1f} us/event"
        )
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
