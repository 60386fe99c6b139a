"""How the embedded broker's fetch speed depends on the number of record batches in a partition.

Produces the same records twice into fresh topics, once in few large batches and once in many small
ones (``linger.ms=0`` and a flush every N records), then reads each with one fresh consumer and
prints the consume rate per eighth of the topic. The ratio is what matters on a shared machine.

Usage: .venv/bin/python -m bench.broker_batches [--records 80000] [--large 40] [--small 8] [--timeout 120]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from orchestration.local_services import start_broker

PAYLOAD = b'{"event": "' + b"x" * 300 + b'"}'


def produce(brokers: str, topic: str, records: int, per_batch: int) -> int:
    """Write ``records`` records, flushing every ``per_batch``; return how many were acknowledged."""
    producer = Producer({"bootstrap.servers": brokers, "linger.ms": 0, "enable.idempotence": True})
    delivered = 0

    def count(err, _msg) -> None:
        nonlocal delivered
        delivered += err is None

    for i in range(records):
        producer.produce(topic, PAYLOAD, key=str(i % 1000).encode(), on_delivery=count)
        if i % per_batch == per_batch - 1:
            producer.flush()
    producer.flush()
    return delivered


def consume_rates(brokers: str, topic: str, records: int, timeout: float) -> tuple[int, float, list[float]]:
    """(records read, seconds, records/s per eighth of the topic) for one fresh consumer."""
    consumer = Consumer(
        {
            "bootstrap.servers": brokers,
            "group.id": f"bench-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 5,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
        }
    )
    consumer.subscribe([topic])
    step, read, rates = max(1, records // 8), 0, []
    began = last = time.monotonic()
    while read < records and time.monotonic() - began < timeout:
        for message in consumer.consume(1000, 1.0):
            if message.error():
                continue
            read += 1
            if read % step == 0:
                now = time.monotonic()
                rates.append(step / (now - last))
                last = now
    consumer.close()
    return read, time.monotonic() - began, rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=80_000)
    parser.add_argument("--large", type=int, default=40, help="records per batch, few batches")
    parser.add_argument("--small", type=int, default=8, help="records per batch, many batches")
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pulse-bench-") as tmp:
        proc, brokers = start_broker(Path(tmp))
        try:
            admin = AdminClient({"bootstrap.servers": brokers})
            for per_batch in (args.large, args.small):
                topic = f"batches-{per_batch}-{uuid.uuid4().hex[:6]}"
                admin.create_topics(
                    [NewTopic(topic, 1, 1, config={"retention.ms": "-1", "retention.bytes": "-1"})]
                )[topic].result()
                written = produce(brokers, topic, args.records, per_batch)
                read, seconds, rates = consume_rates(brokers, topic, written, args.timeout)
                shown = ", ".join(f"{rate:,.0f}" for rate in rates)
                print(
                    f"{written // per_batch:>7,} batches of {per_batch:>3}: "
                    f"read {read:,} of {written:,} in {seconds:.1f} s; records/s per eighth: {shown}"
                )
        finally:
            proc.stop()


if __name__ == "__main__":
    main()
