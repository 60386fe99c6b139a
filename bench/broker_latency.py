"""Bare broker latency as the embedded broker fills up: keyed, durable produce -> consume.

No Pulse code in the path: this is the floor under `bench.e2e_latency`, per partition count.

Usage: .venv/bin/python -m bench.broker_latency [--partitions 1] [--rate 2000] [--seconds 60]
"""

from __future__ import annotations

import argparse
import statistics

from bench.e2e_latency import kafka_baseline
from bench.stack import local_stack

WINDOW_S = 6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    with local_stack(args.partitions) as settings:
        samples = kafka_baseline(settings, args.rate, args.seconds)
    windows: dict[int, list[float]] = {}
    for offset, latency in samples:
        windows.setdefault(int(offset // WINDOW_S), []).append(latency)
    print(
        f"partitions={args.partitions} rate={args.rate}/s: "
        f"median (max) produce->consume ms per {WINDOW_S}s window"
    )
    print(
        "  ".join(
            f"{w * WINDOW_S}s: {statistics.median(v):.0f} ({max(v):.0f})" for w, v in sorted(windows.items())
        )
    )


if __name__ == "__main__":
    main()
