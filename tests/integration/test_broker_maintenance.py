"""Embedded-broker maintenance under traffic: `pulse up`'s platform (real broker, Redis, collector,
profile app and archiver processes) restarts its broker several times while events arrive (traffic
goes on until three maintenances ran), and a SIGKILL of the profile app lands in the middle. Nothing
is lost or counted twice: every event is in the profiles once and in the archive once, and Kafka
offsets never repeat."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import duckdb
import httpx
import pytest

from core.archive_layout import archive_glob
from core.settings import DEV_WRITE_KEY, PulseSettings
from orchestration.local_services import free_port
from orchestration.platform import LocalPlatform
from streaming.profiles.keys import profile_keys

pytestmark = [pytest.mark.integration, pytest.mark.slow]

USERS = 25
EVENTS_PER_REQUEST = 3
#: Requests before the SIGKILL and in all, at least; traffic goes on until enough maintenances ran.
FIRST_REQUESTS, MIN_REQUESTS, MAX_REQUESTS = 120, 240, 4000


def _event(i: int, now: float) -> dict:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "page_view",
        "user_id": f"maint-{i % USERS}",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now - 60)) + f".{i % 1000:03d}Z",
        "metadata": {"url": f"/p/{i}"},
    }


def _send_until(
    api: str, done: Callable[[], bool], sent: list[dict], retries: list[int], failures: list[BaseException]
) -> None:
    """POST requests of EVENTS_PER_REQUEST new events until ``done()`` (at most MAX_REQUESTS in all),
    retrying 503s as SDKs do (Retry-After); ``sent`` gets every event the collector accepted."""
    now = time.time()
    with httpx.Client(base_url=api, headers={"Authorization": f"Bearer {DEV_WRITE_KEY}"}) as client:
        while not done() and not failures:
            assert len(sent) < MAX_REQUESTS * EVENTS_PER_REQUEST, "too few maintenances under traffic"
            batch = [_event(len(sent) + k, now) for k in range(EVENTS_PER_REQUEST)]
            while not failures:
                response = client.post("/v1/events", json={"events": batch}, timeout=30)
                if response.status_code == 503:
                    retries.append(1)
                    time.sleep(float(response.headers.get("Retry-After", "1")) / 10)
                    continue
                assert response.status_code == 202, response.text
                sent.extend(batch)
                break


def test_maintenance_under_traffic_loses_and_doubles_nothing(tmp_path: Path, monkeypatch):
    for name in list(os.environ):
        if name.startswith("PULSE_"):
            monkeypatch.delenv(name)
    # `pulse up` hands its children the environment: set what they must see there.
    monkeypatch.setenv("PULSE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PULSE_API_PORT", str(free_port()))
    monkeypatch.setenv("PULSE_EMBEDDED_BROKER_MAX_BATCHES", "40")  # a maintenance every ~40 requests
    settings = PulseSettings()
    said: list[str] = []

    def say(line: str) -> None:
        said.append(line)
        with open(tmp_path / "up.log", "a") as log:
            log.write(f"{time.strftime('%H:%M:%S')} {line}\n")

    platform = LocalPlatform(settings, with_dagster=False, say=say)
    platform.maintenance_retry_seconds = 1.0
    stop = threading.Event()
    failures: list[BaseException] = []

    def supervise() -> None:
        try:
            while not stop.is_set():
                platform.supervise_once()
                time.sleep(0.1)
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            failures.append(exc)

    urls = platform.start()
    supervisor = threading.Thread(target=supervise, daemon=True)
    supervisor.start()

    def maintenances() -> list[str]:
        return [line for line in said if line.startswith("broker maintenance ") and "restarted" in line]

    try:
        events: list[dict] = []
        retries: list[int] = []
        _send_until(
            urls["api_url"],
            lambda: len(events) >= FIRST_REQUESTS * EVENTS_PER_REQUEST and len(maintenances()) >= 1,
            events,
            retries,
            failures,
        )
        profile_app = next(app for app in platform.apps if app.name == "profile-app")
        assert profile_app.process is not None, said
        os.kill(profile_app.process.process.pid, signal.SIGKILL)
        _send_until(
            urls["api_url"],
            lambda: len(events) >= MIN_REQUESTS * EVENTS_PER_REQUEST and len(maintenances()) >= 3,
            events,
            retries,
            failures,
        )

        import redis

        client = redis.Redis.from_url(urls["redis_url"])
        expected = {f"maint-{u}": 0 for u in range(USERS)}
        for event in events:
            expected[event["user_id"]] += 1

        def counts() -> dict[str, int]:
            return {
                user: int(client.hget(profile_keys(user).fields, "event_count") or 0) for user in expected
            }

        deadline = time.monotonic() + 180
        while counts() != expected and time.monotonic() < deadline and not failures:
            time.sleep(0.5)
        assert not failures, failures
        assert counts() == expected  # every event applied exactly once

        assert len(maintenances()) >= 3, said

        def archived() -> tuple[int, int, int]:
            rows = duckdb.sql(
                f"SELECT count(*), count(DISTINCT event_id), "
                f"count(DISTINCT (kafka_topic, kafka_partition, kafka_offset)) "
                f"FROM read_parquet('{archive_glob(settings.archive_path)}', hive_partitioning = true)"
            ).fetchall()[0]
            return rows  # type: ignore[return-value]

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if archived()[1] == len(events):
                    break
            except duckdb.IOException:
                pass
            time.sleep(0.5)
        rows, distinct_events, distinct_coordinates = archived()
        # Every event archived; no two records share Kafka coordinates across broker restarts
        # (a redelivered checkpoint may write a record twice with the same coordinates).
        assert distinct_events == len(events)
        assert distinct_coordinates == len(events)
        assert rows >= len(events)
    finally:
        stop.set()
        supervisor.join(timeout=30)
        platform.stop()
