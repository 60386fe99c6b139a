"""Instructions per event of the Quix floor and the archiver, counted by callgrind (deterministic).

CPU time on this shared two-core machine moves 10-20 % between trials of the same code
(bench/archiver_throughput.py), more than most changes to the Quix floor. This runs
each application in a child process under ``valgrind --tool=callgrind`` (the broker outside it)
on pre-filled topics of the archiver bench's events, twice: on a topic of ``--small`` and one
of ``--large`` events, each read to its end; the instructions per event are the difference of
the two totals over the difference of the events (start-up and imports cancel out). Every
thread of the process is counted, librdkafka's too; time in the kernel (system calls, futex
waits) is not. Applications, assigned statically as `pulse up` runs them
(streaming/static_assignment.py):

- floor: bench/archiver_throughput.py's Quix application whose sink only counts;
- archiver: the real archiver application.

Usage: .venv/bin/python -m bench.quix_floor_instructions [--small 1000] [--large 6000]
       [--apps floor[,archiver]]
Needs valgrind. Slow: a floor child takes 2-4 minutes here (most of it the imports under
valgrind); an archiver pair of 1,000 and 4,000 events did not finish in 8 minutes.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from confluent_kafka.admin import AdminClient

from bench.archiver_throughput import collector_like
from bench.stack import demo_events, fill_topic, local_stack
from core.topics import ensure_topics, topic_specs

HERE = Path(__file__).resolve().parent.parent

CHILD_CODE = r"""
import gc, sys, threading
from core.settings import PulseSettings
from bench.archiver_throughput import as_pulse_up, quix_floor
from streaming.archiver.main import build_application

app_name, total, settings_json = sys.argv[1], int(sys.argv[2]), sys.argv[3]
settings = PulseSettings.model_validate_json(settings_json)
if app_name == "floor":
    quix_floor(settings, total, static=True)
else:
    gc.unfreeze()
    app, sink = build_application(settings)
    app = as_pulse_up(app, static=True)
    archived = {"rows": 0}
    write = sink.write

    def counted_write(batch):
        write(batch)
        archived["rows"] += batch.size
        if archived["rows"] >= total:
            threading.Thread(target=app.stop, daemon=True).start()

    sink.write = counted_write
    app.run()
    assert archived["rows"] >= total, archived
"""


def instructions(app: str, total: int, settings_json: str, out: Path) -> int:
    """Total instructions of one child that runs ``app`` until it has seen ``total`` events."""
    child = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-c",
            CHILD_CODE,
            app,
            str(total),
            settings_json,
        ],
        cwd=HERE,
        env={**os.environ, "PYTHONPATH": str(HERE), "PYTHONHASHSEED": "0"},
        capture_output=True,
        text=True,
    )
    if child.returncode != 0:
        raise RuntimeError(f"{app} ({total} events) failed: {child.stderr[-3000:]}")
    text = out.read_text()
    found = re.search(r"^(?:summary|totals): (\d+)", text, re.MULTILINE)
    assert found, f"no totals in {out}"
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=6000)
    parser.add_argument("--apps", default="floor")
    args = parser.parse_args()
    events = collector_like(demo_events(args.large, 10_000))
    with local_stack() as settings, tempfile.TemporaryDirectory(prefix="pulse-cg-") as tmp:
        topics = {}
        for total in (args.small, args.large):  # a child reads its whole topic: one checkpoint may
            topics[total] = settings.model_copy(  # take every record there
                update={"topic_events": f"{settings.topic_events}-{total}"}
            )
            ensure_topics(
                AdminClient({"bootstrap.servers": settings.kafka_brokers}), topic_specs(topics[total])
            )
            fill_topic(topics[total], events[:total])
        print(f"topics filled with {args.small} and {args.large} events")
        for app in args.apps.split(","):
            counts = []
            for total in (args.small, args.large):
                group = f"cg-{app}-{total}"
                trial = topics[total].model_copy(
                    update={"archiver_consumer_group": group, "archive_dir": Path(tmp) / group}
                )
                counts.append(instructions(app, total, trial.model_dump_json(), Path(tmp) / f"{group}.out"))
            per_event = (counts[1] - counts[0]) / (args.large - args.small)
            print(
                f"{app}: {counts[0]:,} instructions for {args.small} events, {counts[1]:,} for {args.large}: "
                f"{per_event:,.0f} per event",
                flush=True,
            )


if __name__ == "__main__":
    main()
