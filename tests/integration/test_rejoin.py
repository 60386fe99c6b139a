"""A consumer that loses its group membership rejoins as a new member (streaming/app_runner.py).

Real broker, real Quix application. Between them a TCP proxy that can stall: the app processes
a record, the proxy stops forwarding the app's connections, the group moves on without it
(another member joins and leaves), then the app's checkpoint commit reaches the broker and fails
with "Unknown member". ``run_rejoining`` must build a new application that
rejoins and processes every record (at least once; the sinks are idempotent).
"""

from __future__ import annotations

import json
import logging
import selectors
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from quixstreams import Application

from core.settings import LOCAL_CONSUMER_DEFAULTS
from core.topics import TopicSpec, ensure_topics
from orchestration.local_services import free_port, start_broker
from streaming.app_runner import run_rejoining

pytestmark = pytest.mark.integration

RECORDS = 40


class StallingProxy:
    """Forwards TCP connections to ``target``; ``stall()`` freezes the connections open at that moment.

    Connections made later flow: another consumer can join the group meanwhile.
    """

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", port))
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._stalls: list[threading.Event] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def stall(self) -> None:
        with self._lock:
            for stalled in self._stalls:
                stalled.set()

    def resume(self) -> None:
        with self._lock:
            for stalled in self._stalls:
                stalled.clear()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
                upstream = socket.create_connection(self.target)
            except OSError:
                return
            stalled = threading.Event()
            with self._lock:
                self._stalls.append(stalled)
            threading.Thread(target=self._pump, args=(client, upstream, stalled), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket, stalled: threading.Event) -> None:
        peers = {a: b, b: a}
        with selectors.DefaultSelector() as selector:
            for sock in peers:
                selector.register(sock, selectors.EVENT_READ)
            while not self._closed.is_set():
                if stalled.is_set():
                    time.sleep(0.01)
                    continue
                for key, _ in selector.select(timeout=0.05):
                    try:
                        data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    except OSError:
                        data = b""
                    if not data:
                        a.close()
                        b.close()
                        return
                    peers[key.fileobj].sendall(data)  # type: ignore[index]

    def close(self) -> None:
        self._closed.set()
        self._listener.close()


@pytest.fixture
def proxied_broker(tmp_path) -> Iterator[tuple[str, StallingProxy]]:
    """A broker that tells its clients to connect through a stalling proxy."""
    proxy_port = free_port()
    broker, address = start_broker(tmp_path / "broker", advertised_port=proxy_port)
    host, port = address.rsplit(":", 1)
    proxy = StallingProxy(proxy_port, (host, int(port)))
    yield f"127.0.0.1:{proxy_port}", proxy
    proxy.close()
    broker.stop()


@pytest.fixture
def keep_signal_handlers() -> Iterator[None]:
    saved = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGTERM, saved[0])
    signal.signal(signal.SIGINT, saved[1])


def test_a_commit_after_the_session_expired_rejoins_and_processes_every_record(
    proxied_broker, tmp_path, keep_signal_handlers, caplog
):
    brokers, proxy = proxied_broker
    topic_name = f"rejoin-{uuid.uuid4().hex[:8]}"
    group = f"group-{topic_name}"
    retention = {"retention.ms": "3600000", "retention.bytes": "-1", "cleanup.policy": "delete"}
    ensure_topics(AdminClient({"bootstrap.servers": brokers}), [TopicSpec(topic_name, 1, retention)])
    producer = Producer({"bootstrap.servers": brokers})

    def produce(numbers: range) -> None:
        for n in numbers:
            producer.produce(topic_name, value=json.dumps({"n": n}).encode(), key=b"k")
        producer.flush(30)

    produce(range(RECORDS))
    seen_by: list[set[int]] = []
    apps: list[Application] = []

    def build() -> Application:
        app = Application(
            broker_address=brokers,
            consumer_group=group,
            auto_offset_reset="earliest",
            commit_interval=0.5,
            consumer_poll_timeout=0.005,
            consumer_extra_config=dict(LOCAL_CONSUMER_DEFAULTS),
            state_dir=tmp_path / "state",
            use_changelog_topics=False,
            processing_guarantee="at-least-once",
            loglevel="WARNING",
        )
        app.dataframe(app.topic(topic_name, value_deserializer="json")).update(record)
        apps.append(app)
        seen_by.append(set())
        if len(apps) == 2:  # the rejoined member must take new records too
            threading.Thread(target=produce, args=(range(RECORDS, 2 * RECORDS),), daemon=True).start()
        return app

    def another_member_joins_while_stalled() -> None:
        # The group moves on without the stalled member: a new one joins (its own connection is
        # not stalled), is given the partition, and leaves. Then the stalled connections flow
        # again, and the first app's commit reaches a group that no longer knows it.
        other = Consumer(
            {"bootstrap.servers": brokers, "group.id": group, "enable.auto.commit": False}
            | LOCAL_CONSUMER_DEFAULTS
        )
        other.subscribe([topic_name])
        deadline = time.monotonic() + 60
        while not other.assignment() and time.monotonic() < deadline:
            other.poll(0.1)
        other.close()
        proxy.resume()

    def record(value: dict) -> None:
        seen_by[-1].add(value["n"])
        if len(apps) == 1 and value["n"] == RECORDS // 2:
            # Processed, not committed yet: the next checkpoint commit waits in the stalled proxy.
            proxy.stall()
            threading.Thread(target=another_member_joins_while_stalled, daemon=True).start()
        if len(apps) > 1 and set().union(*seen_by) == set(range(2 * RECORDS)):
            apps[-1].stop()

    with caplog.at_level(logging.WARNING, logger="streaming.app_runner"):
        rejoins = run_rejoining(build, max_rejoins=3, pause_seconds=0.5)

    assert rejoins == 1, f"{rejoins} rejoins, {len(apps)} applications built"
    assert "consumer lost its group membership" in caplog.text and "Unknown member" in caplog.text
    assert set().union(*seen_by) == set(range(2 * RECORDS))
    assert set(range(RECORDS, 2 * RECORDS)) <= seen_by[1], "the rejoined member did not take new records"
