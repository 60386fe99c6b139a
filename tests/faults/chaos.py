"""Fault injection and traffic for the fault tests: signals to real processes, a paced client."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import redis
from confluent_kafka import ConsumerGroupTopicPartitions
from confluent_kafka.admin import AdminClient

from enrichment.catalog import SAMPLE_CATALOG, Catalog, categories_from_rows, read_catalog_csv
from enrichment.reference_store import CATALOG, publish_reference
from orchestration.local_services import ManagedProcess


def pause(proc: ManagedProcess) -> None:
    """SIGSTOP the process group: the process keeps its sockets but answers nothing."""
    assert proc.alive(), f"{proc.name} is not running"
    os.killpg(proc.pid, signal.SIGSTOP)  # type: ignore[arg-type]


def resume(proc: ManagedProcess) -> None:
    """SIGCONT the process group."""
    if proc.process is not None and proc.process.poll() is None:
        os.killpg(proc.pid, signal.SIGCONT)  # type: ignore[arg-type]


def sleep_until(moment: float) -> None:
    """Sleep until ``moment`` on the monotonic clock (at once when it has passed)."""
    time.sleep(max(0.0, moment - time.monotonic()))


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class PacedPoster(threading.Thread):
    """Posts events in batches at a steady pace, retrying 429/503 like an SDK until each batch is
    acknowledged.

    ``acknowledged`` holds the events of every batch answered 202: the ground truth.
    """

    def __init__(
        self, base_url: str, key: str, events: list[dict[str, Any]], *, batch_size: int, seconds: float
    ) -> None:
        super().__init__(name="paced-poster", daemon=True)
        self.base_url, self.key, self.events = base_url, key, events
        self.batch_size, self.seconds = batch_size, seconds
        self.acknowledged: list[dict[str, Any]] = []
        self.refused = 0  # 429/503 answers (each batch was retried until acknowledged)
        self.error: BaseException | None = None

    @property
    def progress(self) -> float:
        return len(self.acknowledged) / max(1, len(self.events))

    def run(self) -> None:
        try:
            self._post_all()
        except BaseException as exc:  # noqa: BLE001 - re-raised by join_and_check
            self.error = exc

    def _post_all(self) -> None:
        batches = [self.events[i : i + self.batch_size] for i in range(0, len(self.events), self.batch_size)]
        pace = self.seconds / max(1, len(batches))
        began = time.monotonic()
        with httpx.Client(base_url=self.base_url, headers={"X-Pulse-Key": self.key}, timeout=30) as client:
            for n, batch in enumerate(batches):
                for attempt in range(200):
                    response = client.post("/v1/events", json={"events": batch})
                    if response.status_code == 202:
                        self.acknowledged.extend(batch)
                        break
                    assert response.status_code in (429, 503), f"{response.status_code}: {response.text}"
                    self.refused += 1
                    time.sleep(min(1.0, 0.1 * (attempt + 1)))
                else:
                    raise AssertionError("the collector kept refusing a batch")
                time.sleep(max(0.0, began + (n + 1) * pace - time.monotonic()))

    def join_and_check(self, timeout: float) -> list[dict[str, Any]]:
        self.join(timeout)
        if self.is_alive():
            raise AssertionError(
                f"traffic did not finish in {timeout:.0f}s "
                f"({len(self.acknowledged)} of {len(self.events)} acknowledged)"
            )
        if self.error is not None:
            raise self.error
        return self.acknowledged


class Supervisor:
    """Keeps named `pulse run` processes running, as `pulse up`, Compose and Kubernetes do.

    Faults the test injects go through ``kill``/``pause``/``resume``; a process that exits on its
    own is restarted and reported in ``unplanned`` (name, exit code, last log line).
    """

    def __init__(self, start: Callable[[str], ManagedProcess], names: list[str]) -> None:
        self._start = start
        self._lock = threading.Lock()
        self.procs = {name: start(name) for name in names}
        self.unplanned: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.25):
            with self._lock:
                for name, proc in self.procs.items():
                    if proc.process is not None and proc.process.poll() is not None:
                        self.unplanned.append(f"{name} exited {proc.process.returncode}: {last_error(proc)}")
                        self.procs[name] = self._start(name)

    def kill(self, *names: str, graceful: bool = False, between: Callable[[], None] | None = None) -> None:
        """SIGKILL (SIGTERM with ``graceful``) the named processes, run ``between``, start them again."""
        with self._lock:
            for name in names:
                self.procs[name].stop() if graceful else self.procs[name].kill()
            if between is not None:
                between()
            for name in names:
                self.procs[name] = self._start(name)

    def pause(self, name: str) -> None:
        pause(self.procs[name])

    def resume(self, name: str) -> None:
        resume(self.procs[name])

    def all_alive(self) -> bool:
        with self._lock:
            return all(p.alive() for p in self.procs.values())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)


def last_error(proc: ManagedProcess) -> str:
    """The last line of a process log that names an exception, else its last line."""
    lines = [line for line in log_tail(proc, 20_000).splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "Exception" in line]
    return (errors or lines or ["(empty log)"])[-1].strip()[:200]


def committed_offsets(brokers: str, group: str, topic: str) -> dict[int, int]:
    """Offsets the consumer group has committed on ``topic``, by partition."""
    admin = AdminClient({"bootstrap.servers": brokers})
    offsets = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(10)
    return {
        tp.partition: tp.offset for tp in offsets.topic_partitions if tp.topic == topic and tp.offset >= 0
    }


def log_tail(proc: ManagedProcess, chars: int = 3000) -> str:
    return proc.log_tail(chars)


def count_in_log(proc: ManagedProcess, needle: str) -> int:
    try:
        return proc.log_path.read_text(errors="replace").count(needle)
    except FileNotFoundError:
        return 0


def publish_sample_catalog(url: str) -> Catalog:
    """Publish the sample catalog to the Redis at ``url``; the profile app enriches events with it."""
    client = redis.Redis.from_url(url)
    try:
        rows = read_catalog_csv(SAMPLE_CATALOG)
        return Catalog(publish_reference(client, CATALOG, rows, "product_id"), categories_from_rows(rows))
    finally:
        client.close()
