"""The collector during an embedded-broker maintenance (real collector process, real broker): a
request that arrives while intake is held waits in place and is answered 202 once the hold is
released, its event in the topic; one held longer than PULSE_BROKER_HOLD_WAIT_SECONDS gets
503 + Retry-After."""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from core.broker_hold import BrokerHold
from core.settings import PulseSettings
from orchestration.local_services import ManagedProcess
from orchestration.platform import pulse_app_process, settings_process_env
from tests.integration.helpers import eventually

pytestmark = pytest.mark.integration

HELD = re.compile(r"^pulse_collector_requests_held ([0-9.]+)$", re.MULTILINE)


@pytest.fixture
def held_collector(
    settings: PulseSettings, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple]:
    """A running collector following a hold directory; (settings, hold, base URL)."""
    hold = BrokerHold(tmp_path / "broker-hold")
    hold.prepare()
    s = settings.model_copy(
        update={"broker_hold_dir": hold.directory, "broker_hold_wait_seconds": request.param}
    )
    proc: ManagedProcess = pulse_app_process("api", settings_process_env(s), tmp_path / "logs")
    proc.start()
    try:
        proc.wait_for_port(s.api_host, s.api_port, timeout=60)
        yield s, hold, f"http://{s.api_host}:{s.api_port}"
    finally:
        proc.stop()


def _event() -> dict:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "page_view",
        "user_id": "held-user",
        "timestamp": "2026-01-01T00:00:00.000Z",
        "metadata": {"url": "/held"},
    }


def _hold(hold: BrokerHold) -> None:
    hold.begin(1)
    assert eventually(lambda: hold.acknowledgements(1) == 1, timeout=30), "the collector did not hold"


def _post(base: str, event: dict) -> httpx.Response:
    return httpx.post(
        f"{base}/v1/events", json={"events": [event]}, headers={"X-Pulse-Key": "test-write"}, timeout=120
    )


def _held_requests(base: str) -> float:
    match = HELD.search(httpx.get(f"{base}/metrics", timeout=10).text)
    return float(match.group(1)) if match else 0.0


def _event_ids_in(settings: PulseSettings) -> set[str]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_brokers,
            "group.id": f"check-{uuid.uuid4().hex}",  # assigned, not subscribed: no group join
            "enable.auto.commit": False,
        }
    )
    consumer.assign(
        [TopicPartition(settings.topic_events, p, OFFSET_BEGINNING) for p in range(settings.topic_partitions)]
    )
    ids: set[str] = set()
    try:
        idle = 0
        while idle < 6:
            message = consumer.poll(0.5)
            if message is None or message.error():
                idle += 1
                continue
            found = re.search(rb'"event_id":\s*"([0-9a-f-]+)"', message.value())
            if found:
                ids.add(found.group(1).decode())
    finally:
        consumer.close()
    return ids


@pytest.mark.parametrize("held_collector", [120.0], indirect=True)
def test_a_request_held_during_maintenance_is_answered_after_the_release(held_collector):
    settings, hold, base = held_collector
    _hold(hold)
    event = _event()
    answers: list[httpx.Response] = []
    sender = threading.Thread(target=lambda: answers.append(_post(base, event)))
    sender.start()
    # The request waits inside the collector (not refused, not yet produced).
    assert eventually(lambda: _held_requests(base) == 1.0, timeout=30)
    assert not answers
    hold.release()
    sender.join(timeout=60)
    assert [a.status_code for a in answers] == [202], [a.text for a in answers]
    assert _held_requests(base) == 0.0
    assert event["event_id"] in _event_ids_in(settings)


@pytest.mark.parametrize("held_collector", [0.2], indirect=True)
def test_a_request_held_past_the_bound_gets_503_then_goes_through_after_the_release(held_collector):
    settings, hold, base = held_collector
    _hold(hold)
    event = _event()
    refused = _post(base, event)
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "1"
    hold.release()
    assert eventually(lambda: _post(base, event).status_code == 202, timeout=30)
    assert event["event_id"] in _event_ids_in(settings)
