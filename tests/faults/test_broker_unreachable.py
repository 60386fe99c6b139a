"""Broker unreachable: the collector answers 503 (never 202), the Python SDK retries and delivers.

Tansu keeps its data in memory only, so a broker that is killed and started again comes back
empty: the test cannot stop the broker and expect its records back. It injects the two faults
that keep the data instead:

1. nothing listens at the broker address yet (a collector started before its broker): every
   request is refused with 503 (after ``PULSE_DELIVERY_TIMEOUT_MS``); then the broker starts on
   that address and the same collector, untouched, accepts what the SDK has kept retrying;
2. the running broker is SIGSTOPped (a partition: connections open, no answers) and SIGCONTed.

Ground truth: every event the SDK and the probing client had acknowledged in the end.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka.admin import AdminClient

from core.topics import ensure_topics, topic_specs
from orchestration.demo_traffic import TrafficGenerator
from orchestration.local_services import ManagedProcess, free_port, start_broker
from pulse_sdk import PulseClient
from tests.faults.chaos import pause, publish_sample_catalog, resume, sleep_until, wait_for
from tests.faults.invariants import check_dlq, check_profiles, is_valid, observe_unplanned_exits

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: PULSE_DELIVERY_TIMEOUT_MS of the collector under test: it bounds how long a refusal takes.
DELIVERY_TIMEOUT_MS = 2000
#: How long the broker stays SIGSTOPped: longer than the delivery timeout, so requests in flight time out.
BROKER_PAUSE_SECONDS = 8.0
SDK_OPTIONS: dict[str, Any] = {
    "batch_size": 50,
    "flush_interval": 0.1,
    "backoff_base": 0.05,
    "max_backoff": 0.5,
    "shutdown_timeout": 1.0,
    "register_atexit": False,
}


def _send(client: PulseClient, event: dict[str, Any]) -> None:
    client.track(
        event["event_type"],
        user_id=event.get("user_id"),
        anonymous_id=event.get("anonymous_id"),
        metadata=event.get("metadata"),
        timestamp=event["timestamp"],
        event_id=event["event_id"],
    )


class Prober:
    """Posts small batches and times the answers; unacknowledged batches are retried later, like a client."""

    def __init__(self, base: str, events: list[dict[str, Any]]) -> None:
        self.http = httpx.Client(base_url=base, headers={"X-Pulse-Key": "test-write"}, timeout=ANSWER_TIMEOUT)
        self.events = events
        self.answers: list[tuple[int, float]] = []  # (status, seconds)
        self.unacknowledged: list[list[dict[str, Any]]] = []
        self.acknowledged: list[dict[str, Any]] = []

    def probe(self, size: int = 10) -> tuple[int, float]:
        batch, self.events = self.events[:size], self.events[size:]
        began = time.monotonic()
        status = self.http.post("/v1/events", json={"events": batch}).status_code
        answer = (status, time.monotonic() - began)
        self.answers.append(answer)
        if status == 202:
            self.acknowledged.extend(batch)
        else:
            self.unacknowledged.append(batch)
        return answer

    def deliver_the_rest(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.unacknowledged:
            assert time.monotonic() < deadline, "the collector kept refusing after the broker came back"
            batch = self.unacknowledged[0]
            if self.http.post("/v1/events", json={"events": batch}).status_code == 202:
                self.acknowledged.extend(self.unacknowledged.pop(0))
            else:
                time.sleep(0.2)


#: How long to wait for the collector to accept events again once the broker is back: generous,
#: since whether it recovers by itself is under test, not how fast (that is for the benchmarks).
RECOVERY_SECONDS = 120.0
#: How long a request may take before it counts as unanswered.
ANSWER_TIMEOUT = 60.0


def _check_delivered(
    fault_run, sdk: PulseClient, sent: list[dict[str, Any]], prober: Prober, base: str
) -> None:
    """The SDK and the prober get every event acknowledged after the broker's return."""
    flushed = sdk.flush(timeout=RECOVERY_SECONDS)
    if flushed:
        prober.deliver_the_rest(RECOVERY_SECONDS)
    health = httpx.get(f"{base}/healthz", timeout=ANSWER_TIMEOUT).status_code
    stats = sdk.stats
    fault_run.check(
        "the collector accepts events again after the broker's return",
        flushed,
        f"SDK: {stats.delivered}/{stats.enqueued} delivered after {stats.retries} retries"
        + ("" if flushed else f"; still answered: {stats.last_error}; GET /healthz meanwhile: {health}"),
    )
    sdk.close()
    fault_run.check(
        "the SDK delivered every event (nothing dropped or spooled)",
        stats.delivered == stats.enqueued == len(sent)
        and (stats.dropped, stats.rejected, stats.spooled) == (0, 0, 0),
        f"{stats.delivered}/{stats.enqueued} delivered, {stats.retries} retries",
    )


@pytest.fixture
def sdk_for() -> Iterator[Any]:
    """Python SDK clients (sdk/python) closed after the test, even when it fails."""
    clients: list[PulseClient] = []

    def make(base: str) -> PulseClient:
        clients.append(PulseClient(base, "test-write", **SDK_OPTIONS))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[tuple[int, list[ManagedProcess]]]:
    """A port for a broker of this test alone, and the broker processes started on it (stopped at the end)."""
    started: list[ManagedProcess] = []
    yield free_port(), started
    for proc in started:
        resume(proc)
        proc.stop()


def _start_broker(tmp_path: Path, port: int, settings, started: list[ManagedProcess]) -> ManagedProcess:
    broker, address = start_broker(tmp_path / "own-broker", port=port)
    started.append(broker)
    ensure_topics(AdminClient({"bootstrap.servers": address}), topic_specs(settings))
    return broker


@pytest.mark.fault("broker unreachable: nothing listens at its address, then it starts")
@pytest.mark.usefixtures("redis_client")  # a clean session Redis for the profile app
def test_no_broker_collector_refuses_fast_sdk_delivers_once_it_starts(
    settings, launch, supervise, own_broker, sdk_for, rng, fault_run, tmp_path: Path
):
    port, brokers = own_broker
    catalog = publish_sample_catalog(settings.redis_url)
    s = settings.model_copy(
        update={"kafka_brokers": f"127.0.0.1:{port}", "delivery_timeout_ms": DELIVERY_TIMEOUT_MS}
    )
    launch("api", s)
    base = f"http://{s.api_host}:{s.api_port}"
    valid = [
        e
        for e in TrafficGenerator(catalog.categories, users=60, seed=rng.randrange(10**6)).events(1200)
        if is_valid(e)
    ]
    sent, prober = valid[:800], Prober(base, valid[800:])
    sdk = sdk_for(base)

    fault_run.inject(
        f"collector started against 127.0.0.1:{port}, where nothing listens "
        f"(PULSE_DELIVERY_TIMEOUT_MS={DELIVERY_TIMEOUT_MS})"
    )
    for event in sent:
        _send(sdk, event)
    refused = [prober.probe() for _ in range(4)]
    health = httpx.get(f"{base}/healthz", timeout=ANSWER_TIMEOUT)
    wait_for(lambda: "503" in (sdk.stats.last_error or ""), 30, "the SDK to see a 503")
    delivered_while_down, retries_while_down = sdk.stats.delivered, sdk.stats.retries
    time.sleep(rng.uniform(0.0, 3.0))
    _start_broker(tmp_path, port, s, brokers)
    fault_run.inject("broker started on that address; the collector was not restarted")
    apps = supervise(lambda _name: launch("profile-app", s), ["profile-app"])

    fault_run.check(
        "no broker: never 202, every request answered 503",
        all(code == 503 for code, _ in refused),
        f"{[code for code, _ in refused]}, each in at most {max(t for _, t in refused):.1f}s",
    )
    fault_run.check(
        "no broker: GET /healthz answers 503 (broker: false)",
        health.status_code == 503 and health.json().get("broker") is False,
        f"{health.status_code} {health.json()}",
    )
    fault_run.check(
        "no broker: the SDK delivered nothing and kept retrying",
        delivered_while_down == 0 and retries_while_down > 0,
        f"{retries_while_down} retries",
    )
    _check_delivered(fault_run, sdk, sent, prober, base)
    acknowledged = sent + prober.acknowledged
    check_profiles(fault_run, s, catalog, acknowledged)
    check_dlq(fault_run, s, acknowledged, exact=False)
    observe_unplanned_exits(fault_run, apps)


@pytest.mark.fault(
    f"broker SIGSTOPped {BROKER_PAUSE_SECONDS:.0f}s (connections open, no answers), then SIGCONT"
)
@pytest.mark.usefixtures("redis_client")
def test_broker_stopped_collector_refuses_then_recovers(
    settings, launch, supervise, own_broker, sdk_for, rng, fault_run, tmp_path: Path
):
    port, brokers = own_broker
    catalog = publish_sample_catalog(settings.redis_url)
    s = settings.model_copy(
        update={"kafka_brokers": f"127.0.0.1:{port}", "delivery_timeout_ms": DELIVERY_TIMEOUT_MS}
    )
    broker = _start_broker(tmp_path, port, s, brokers)
    api = launch("api", s)
    apps = supervise(lambda _name: launch("profile-app", s), ["profile-app"])
    base = f"http://{s.api_host}:{s.api_port}"
    valid = [
        e
        for e in TrafficGenerator(catalog.categories, users=60, seed=rng.randrange(10**6)).events(1200)
        if is_valid(e)
    ]
    before, during_pause, prober = valid[:400], valid[400:800], Prober(base, valid[800:])
    sdk = sdk_for(base)
    for event in before:
        _send(sdk, event)
    assert sdk.flush(timeout=60), sdk.stats

    time.sleep(rng.uniform(0.0, 2.0))
    pause(broker)
    paused_at = time.monotonic()
    for event in during_pause:
        _send(sdk, event)
    answers: list[tuple[int, float]] = []
    while time.monotonic() - paused_at < BROKER_PAUSE_SECONDS - DELIVERY_TIMEOUT_MS / 1000 - 1:
        answers.append(prober.probe())
    health = httpx.get(f"{base}/healthz", timeout=ANSWER_TIMEOUT)
    sleep_until(paused_at + BROKER_PAUSE_SECONDS)
    resume(broker)
    fault_run.inject(
        f"broker SIGSTOPped for {BROKER_PAUSE_SECONDS:.0f}s with SDK batches and probes in flight; SIGCONT"
    )

    fault_run.check(
        "broker stopped: never 202, every request answered 503",
        answers and all(code == 503 for code, _ in answers),
        f"{len(answers)} probes: {sorted({code for code, _ in answers})}, "
        f"each in at most {max(t for _, t in answers):.1f}s",
    )
    fault_run.check(
        "broker stopped: GET /healthz answers 503 (broker: false)",
        health.status_code == 503 and health.json().get("broker") is False,
        f"{health.status_code} {health.json()}",
    )
    sent = before + during_pause
    recovered = sdk.flush(timeout=RECOVERY_SECONDS)
    stuck = (
        f"SDK: {sdk.stats.delivered}/{sdk.stats.enqueued} delivered; still answered: {sdk.stats.last_error}; "
        f"GET /healthz meanwhile: {httpx.get(f'{base}/healthz', timeout=ANSWER_TIMEOUT).status_code}"
    )
    if not recovered:
        api.stop()  # what an operator would do; the SDK keeps retrying meanwhile
        api = launch("api", s)
        fault_run.inject(
            f"API restarted: it had not recovered {RECOVERY_SECONDS:.0f}s after the broker's return"
        )
    assert sdk.flush(timeout=60), sdk.stats
    prober.deliver_the_rest()
    sdk.close()
    stats = sdk.stats
    fault_run.check(
        "the SDK delivered every event (nothing dropped or spooled)",
        stats.delivered == stats.enqueued == len(sent)
        and (stats.dropped, stats.rejected, stats.spooled) == (0, 0, 0),
        f"{stats.delivered}/{stats.enqueued} delivered, {stats.retries} retries",
    )
    acknowledged = sent + prober.acknowledged
    check_profiles(fault_run, s, catalog, acknowledged)
    check_dlq(fault_run, s, acknowledged, exact=False)
    observe_unplanned_exits(fault_run, apps)
    fault_run.check(
        "the collector accepts events again by itself after the broker's return",
        recovered,
        "yes" if recovered else stuck,
    )
