"""The collector/API in-process against a real broker and Redis: statuses, DLQ, bad input."""

from __future__ import annotations

import gzip
import json
import uuid

import pytest
from confluent_kafka import Consumer
from fastapi.testclient import TestClient

from streaming.api.app import create_app
from streaming.dlq import read_dlq_headers

pytestmark = pytest.mark.integration

WRITE = {"X-Pulse-Key": "test-write"}
READ = {"Authorization": "Bearer test-read"}


def good_event(**changes):
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "page_view",
        "user_id": "u1",
        "timestamp": "2024-04-25T14:23:05.123Z",
        "metadata": {"product_id": "p1", "category": "shoes"},
        **changes,
    }


def read_topic(broker: str, topic: str, expected: int, timeout: float = 20.0):
    consumer = Consumer(
        {
            "bootstrap.servers": broker,
            "group.id": f"reader-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 5,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
        }
    )
    consumer.subscribe([topic])
    messages = []
    import time

    deadline = time.monotonic() + timeout
    while len(messages) < expected and time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is not None and msg.error() is None:
            messages.append(msg)
    # Drain a little longer to catch unexpected extra messages.
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        msg = consumer.poll(0.1)
        if msg is not None and msg.error() is None:
            messages.append(msg)
    consumer.close()
    return messages


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings)) as c:
        yield c


def test_batch_with_invalid_events_accepts_the_valid_ones(client, settings):
    good = [good_event(), good_event(user_id="u2")]
    bad = good_event(timestamp="not a time")
    response = client.post("/v1/events", json={"events": [good[0], bad, good[1]]}, headers=WRITE)
    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 2
    assert body["rejected"] == [
        {
            "index": 1,
            "event_id": bad["event_id"],
            "error": "timestamp 'not a time' is not RFC 3339 / ISO 8601",
        }
    ]

    events = read_topic(settings.kafka_brokers, settings.topic_events, 2)
    assert sorted(m.key() for m in events) == [b"u1", b"u2"]
    values = [json.loads(m.value()) for m in events]
    assert {v["event_id"] for v in values} == {g["event_id"] for g in good}
    assert all("received_at" in v for v in values)

    dlq = read_topic(settings.kafka_brokers, settings.topic_dlq, 1)
    assert len(dlq) == 1
    assert json.loads(dlq[0].value()) == bad
    headers = read_dlq_headers(dlq[0].headers())
    assert headers["pulse.error"].startswith("timestamp")
    assert headers["pulse.source"] == "collector"


def test_single_event_body(client):
    response = client.post("/v1/events", json=good_event(), headers=WRITE)
    assert response.status_code == 202
    assert response.json() == {"accepted": 1, "rejected": []}


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b"{not json", WRITE, 400),
        (b"\xff\xfe\xfd", WRITE, 400),
        (b"[" * 5000 + b"]" * 5000, WRITE, 400),
        (b'"just a string"', WRITE, 400),
        (b'{"events": {"a": 1}}', WRITE, 400),
        (json.dumps({"events": [good_event() for _ in range(501)]}).encode(), WRITE, 413),
        (b'{"events": []}' + b" " * (1024 * 1024), WRITE, 413),
        (json.dumps(good_event()).encode(), {}, 401),
        (json.dumps(good_event()).encode(), {"X-Pulse-Key": "wrong"}, 401),
        (json.dumps(good_event()).encode(), {"X-Pulse-Key": "test-read"}, 403),
    ],
)
def test_bad_requests_get_their_status_and_the_server_keeps_serving(client, body, headers, status):
    response = client.post(
        "/v1/events", content=body, headers={**headers, "Content-Type": "application/json"}
    )
    assert response.status_code == status, response.text
    assert response.json()["detail"]
    assert client.post("/v1/events", json=good_event(), headers=WRITE).status_code == 202


def test_wrong_types_are_rejected_per_event_not_per_request(client):
    response = client.post(
        "/v1/events",
        json={"events": [good_event(user_id=123), good_event(metadata="x"), good_event(), 7]},
        headers=WRITE,
    )
    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 1
    assert [r["index"] for r in body["rejected"]] == [0, 1, 3]
    assert body["rejected"][2]["event_id"] is None


def test_rate_limit_per_key_is_shared_by_every_api_process(settings):
    """Two API instances (as two workers or replicas) draw on one bucket per key, kept in Redis."""
    key = {"X-Pulse-Key": f"limited-{uuid.uuid4().hex[:8]}"}  # a bucket of its own in the shared Redis
    limited = settings.model_copy(
        update={
            "write_keys": [*settings.write_keys, key["X-Pulse-Key"]],
            "rate_limit_events_per_second": 0.001,
            "rate_limit_burst": 3,
        }
    )
    with TestClient(create_app(limited)) as first, TestClient(create_app(limited)) as second:
        assert (
            first.post("/v1/events", json={"events": [good_event(), good_event()]}, headers=key).status_code
            == 202
        )
        response = second.post("/v1/events", json={"events": [good_event(), good_event()]}, headers=key)
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "1"
        assert (
            second.post("/v1/events", json=good_event(), headers=key).status_code == 202
        )  # the third of the burst
        assert first.post("/v1/events", json=good_event(), headers=key).status_code == 429
        assert (
            second.post("/v1/events", json=good_event(), headers=WRITE).status_code == 202
        )  # other keys unaffected


def test_rate_limit_per_process_when_not_shared(settings):
    key = {"X-Pulse-Key": f"limited-{uuid.uuid4().hex[:8]}"}
    limited = settings.model_copy(
        update={
            "write_keys": [*settings.write_keys, key["X-Pulse-Key"]],
            "rate_limit_events_per_second": 0.001,
            "rate_limit_burst": 3,
            "rate_limit_shared": False,
        }
    )
    with TestClient(create_app(limited)) as first, TestClient(create_app(limited)) as second:
        assert (
            first.post("/v1/events", json={"events": [good_event(), good_event()]}, headers=key).status_code
            == 202
        )
        assert (
            first.post("/v1/events", json={"events": [good_event(), good_event()]}, headers=key).status_code
            == 429
        )
        assert (
            second.post("/v1/events", json={"events": [good_event(), good_event()]}, headers=key).status_code
            == 202
        )


def test_profiles_need_a_read_key_and_unknown_is_404(client):
    assert client.get("/v1/profiles/u1").status_code == 401
    assert client.get("/v1/profiles/u1", headers=WRITE).status_code == 403
    assert client.get("/v1/profiles/nobody", headers=READ).status_code == 404
    assert client.get("/v1/decisions/nobody", headers=READ).status_code == 404
    assert client.delete("/v1/profiles/nobody", headers=READ).status_code == 202


def test_operations_endpoints(client):
    assert client.get("/healthz").json() == {"status": "ok", "redis": True, "broker": True}
    client.post("/v1/events", json=good_event(), headers=WRITE)
    assert "pulse_collector_events_accepted_total" in client.get("/metrics").text
    schema = client.get("/openapi.json").json()
    assert "Event" in schema["components"]["schemas"]
    assert client.get("/docs").status_code == 200
    assert client.get("/v1/schema/event").json()["title"] == "Pulse event"


def test_missing_keys_outside_dev_mode_is_a_start_up_error(settings):
    from streaming.api.auth import MissingKeysError

    with pytest.raises(MissingKeysError, match="PULSE_WRITE_KEYS"):
        create_app(settings.model_copy(update={"write_keys": [], "read_keys": []}))


def test_unreachable_broker_answers_503_not_202(settings):
    from orchestration.local_services import free_port

    dead = settings.model_copy(
        update={"kafka_brokers": f"127.0.0.1:{free_port()}", "delivery_timeout_ms": 1500}
    )
    with TestClient(create_app(dead)) as c:
        response = c.post("/v1/events", json=good_event(), headers=WRITE)
        assert response.status_code == 503
        assert c.get("/healthz").status_code == 503


def test_gzip_is_not_silently_misread(client):
    body = gzip.compress(json.dumps(good_event()).encode())
    response = client.post("/v1/events", content=body, headers={**WRITE, "Content-Type": "application/json"})
    assert response.status_code == 400
