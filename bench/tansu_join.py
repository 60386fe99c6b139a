"""How long a consumer's first group join takes on the embedded broker (Tansu), per session timeout.

After each embedded-broker maintenance the consumer apps join fresh groups, and the first record
after the release waits for that join (docs/architecture.md, "Embedded broker maintenance").
Starts a Tansu broker, then for each ``--session-ms`` subscribes new consumers of a new group and
times subscribe -> partitions assigned.

Usage: .venv/bin/python -m bench.tansu_join [--session-ms 3000 2000 1000 400] [--tries 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

from orchestration.local_services import start_broker

TOPIC = "join-probe"


def time_join(address: str, session_ms: int) -> float:
    """Seconds from subscribe to the first assignment of a new group's only member."""
    assigned: list[float] = []
    consumer = Consumer(
        {
            "bootstrap.servers": address,
            "group.id": f"join-{uuid.uuid4().hex}",
            "session.timeout.ms": session_ms,
            "heartbeat.interval.ms": max(100, session_ms // 6),
            "fetch.wait.max.ms": 5,
        }
    )
    started = time.monotonic()
    consumer.subscribe([TOPIC], on_assign=lambda _c, _p: assigned.append(time.monotonic() - started))
    while not assigned and time.monotonic() - started < 60:
        consumer.poll(0.01)
    consumer.close()
    if not assigned:
        raise SystemExit(f"no assignment within 60 s at session.timeout.ms={session_ms}")
    return assigned[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--session-ms", type=int, nargs="+", default=[3000, 2000, 1000, 400])
    parser.add_argument("--tries", type=int, default=2)
    args = parser.parse_args()
    proc, address = start_broker(Path(tempfile.mkdtemp(prefix="pulse-tansu-join-")))
    try:
        admin = AdminClient({"bootstrap.servers": address})
        config = {"retention.ms": "-1", "retention.bytes": "-1"}  # Tansu needs explicit retention
        admin.create_topics([NewTopic(TOPIC, 1, 1, config=config)])[TOPIC].result()
        for session_ms in args.session_ms:
            joins = [time_join(address, session_ms) for _ in range(args.tries)]
            print(
                f"session.timeout.ms {session_ms:>5}: joined after "
                + ", ".join(f"{s:.3f}" for s in joins)
                + " s"
            )
    finally:
        proc.stop()


if __name__ == "__main__":
    main()
