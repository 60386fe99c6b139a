"""The archiver's CPU per event on one process, beside a bare baseline on the same topic, same run.

- baseline: a raw confluent-kafka consume loop that writes the records' bytes to Parquet per
  5,000 records (what any archiver must do, without validation or columns);
- quix floor: a Quix application with the archiver's settings whose sink only counts the records
  (what Quix's per-record consume, deserialize, dataflow and sink calls cost alone);
- archiver: the real archiver application (`pulse run archiver`'s ``build_application``: the
  events dataflow and the dead-letter one, the events sink building each checkpoint's rows).

The topic holds demo events as the collector writes them (``received_at``, a browser request's
``metadata.context``: device, geo and campaign). Each archiver trial reads it with a fresh
consumer group into a fresh folder; the CPU of its main thread and of the whole process is
counted from ``app.run()`` until the last record is archived. pyarrow's one-time pandas import
(about 1.3 CPU s per process, which the archiver pays at start-up) is done before the first trial.

With ``--static`` both applications are assigned statically as `pulse up` runs them
(streaming/static_assignment.py) instead of joining their groups. Every application is frozen
for the garbage collector after it is built, as `pulse up` runs it.

Usage: .venv/bin/python -m bench.archiver_throughput [--events 100000] [--repeat 3] [--static]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import threading
import time
import uuid
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
from confluent_kafka import Consumer
from quixstreams import Application
from quixstreams.sinks import BatchingSink, SinkBatch

from bench.stack import demo_events, fill_topic, local_stack
from core.kafka_config import consumer_tuning
from core.settings import PulseSettings
from streaming.archiver.main import build_application
from streaming.static_assignment import assign_statically

BROWSER_CONTEXT = {
    "device": {"type": "desktop", "browser": "Chrome", "os": "Linux"},
    "geo": {"country": "DE", "region": "BE", "city": "Berlin"},
    "campaign": {"source": "newsletter", "medium": "email", "name": "winter"},
}


def collector_like(events: list[dict]) -> list[dict]:
    """The demo events as the collector forwards a browser's: ``received_at`` and ``metadata.context``."""
    for event in events:
        if isinstance(event.get("metadata"), dict):
            event["metadata"]["context"] = BROWSER_CONTEXT
        event["received_at"] = "2026-12-07T10:00:00.000Z"
    return events


def cpu_now() -> tuple[float, float]:
    """(this process's CPU seconds, its main thread's) so far."""
    times = psutil.Process().cpu_times()
    return times.user + times.system, time.thread_time()


def baseline(settings: PulseSettings, total: int, folder: Path) -> dict[str, float]:
    """Consume every record and write its bytes to Parquet per 5,000 records."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_brokers,
            "group.id": f"baseline-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            **consumer_tuning(settings, "archiver"),
        }
    )
    consumer.subscribe([settings.topic_events])
    folder.mkdir(parents=True)
    seen, pending, start = 0, [], None
    while seen < total:
        for msg in consumer.consume(1000, 1.0):
            if msg.error():
                continue
            if start is None:
                start = cpu_now()
            pending.append(msg.value())
            seen += 1
            if len(pending) == 5000 or seen == total:
                pq.write_table(pa.table({"raw": pa.array(pending, pa.binary())}), folder / f"{seen}.parquet")
                pending = []
    end = cpu_now()
    consumer.close()
    assert start is not None
    return {"process": (end[0] - start[0]) / total * 1e6, "main": (end[1] - start[1]) / total * 1e6}


def as_pulse_up(app: Application, static: bool) -> Application:
    """``app`` assigned statically as `pulse up` runs it when ``static`` (streaming/static_assignment.py),
    then frozen for the garbage collector as `pulse up` runs it (streaming/app_runner.py,
    ``frozen_after``): without it, full collections walk the benchmark's own event list too, and
    each trial the garbage of the last."""
    if static:
        assign_statically(app)
    gc.collect()
    gc.freeze()
    return app


def archiver(settings: PulseSettings, total: int, static: bool = False) -> dict[str, float]:
    """Run the archiver until every record is archived; CPU per event over the whole run."""
    gc.unfreeze()
    app, sink = build_application(settings)
    app = as_pulse_up(app, static)
    archived = {"rows": 0}
    write = sink.write

    def counted_write(batch) -> None:  # type: ignore[no-untyped-def]
        write(batch)
        archived["rows"] += batch.size
        if archived["rows"] >= total:
            threading.Thread(target=app.stop, daemon=True).start()

    sink.write = counted_write  # type: ignore[method-assign]
    start = cpu_now()
    app.run()
    end = cpu_now()
    assert archived["rows"] == total, archived
    return {"process": (end[0] - start[0]) / total * 1e6, "main": (end[1] - start[1]) / total * 1e6}


class CountingSink(BatchingSink):
    """A sink that archives nothing: the Quix floor under the archiver."""

    def __init__(self, total: int, stop) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.total, self.seen, self.stop = total, 0, stop

    def write(self, batch: SinkBatch) -> None:
        self.seen += batch.size
        if self.seen >= self.total:
            threading.Thread(target=self.stop, daemon=True).start()


def quix_floor(settings: PulseSettings, total: int, static: bool = False) -> dict[str, float]:
    """A Quix application as the archiver builds it, whose sink only counts."""
    gc.unfreeze()
    app = Application(
        broker_address=settings.kafka_brokers,
        consumer_group=f"floor-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        commit_interval=settings.archive_commit_interval_seconds,
        consumer_poll_timeout=0.1,
        consumer_extra_config=consumer_tuning(settings, "archiver"),
        state_dir=settings.data_path / "state" / "floor",
        use_changelog_topics=False,
        loglevel="WARNING",
    )
    topic = app.topic(settings.topic_events, value_deserializer="bytes", key_deserializer="bytes")
    sink = CountingSink(total, app.stop)
    app.dataframe(topic).sink(sink)
    app = as_pulse_up(app, static)
    start = cpu_now()
    app.run()
    end = cpu_now()
    assert sink.seen == total, sink.seen
    return {"process": (end[0] - start[0]) / total * 1e6, "main": (end[1] - start[1]) / total * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3, help="alternated trials (medians are reported)")
    parser.add_argument(
        "--static",
        action="store_true",
        help="the apps assigned statically as `pulse up` runs them (no group join)",
    )
    args = parser.parse_args()
    events = collector_like(demo_events(args.events, args.users))
    pa.Table.from_pylist([{"x": 1}])  # pyarrow's lazy pandas import, once per process
    with local_stack() as settings:
        fill_topic(settings, events)
        print(f"topic filled with {len(events)} events; {args.repeat} alternated trials")
        results: dict[str, list[dict[str, float]]] = {"baseline": [], "quix floor": [], "archiver": []}
        for trial in range(args.repeat):
            folder = settings.data_path / f"trial-{trial}"
            trial_settings = settings.model_copy(
                update={"archiver_consumer_group": f"archiver-{trial}", "archive_dir": folder / "archive"}
            )
            results["archiver"].append(archiver(trial_settings, args.events, args.static))
            results["baseline"].append(baseline(settings, args.events, folder / "baseline"))
            results["quix floor"].append(quix_floor(trial_settings, args.events, args.static))
            print(
                f"trial {trial}: CPU µs/event, process (main thread): "
                + ", ".join(f"{k} {v[-1]['process']:.1f} ({v[-1]['main']:.1f})" for k, v in results.items())
            )
        med = {
            k: {m: statistics.median(r[m] for r in v) for m in ("process", "main")}
            for k, v in results.items()
        }
        print(
            f"\nmedian CPU µs/event: archiver {med['archiver']['process']:.1f} "
            f"(main thread {med['archiver']['main']:.1f}), baseline {med['baseline']['process']:.1f} "
            f"(main thread {med['baseline']['main']:.1f}), Quix floor {med['quix floor']['process']:.1f} "
            f"(main thread {med['quix floor']['main']:.1f}); archiver / baseline "
            f"{med['archiver']['process'] / med['baseline']['process']:.2f}x"
        )


if __name__ == "__main__":
    main()
