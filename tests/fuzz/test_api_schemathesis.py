"""Schemathesis against the API's own OpenAPI, in process, with a real broker and Redis.

Every operation is called with generated valid and invalid inputs, once with the right key for
its scope and once with whatever headers are generated. Invariants: no 5xx, every 4xx has a
reason, every rejected event has a reason. The Segment endpoints read the raw request, so their
OpenAPI has no body; the test adds one (Segment's message format) to fuzz them too.
"""

from __future__ import annotations

import base64
import copy
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import schemathesis
from confluent_kafka.admin import AdminClient
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from core.kafka_config import durable_producer_config
from core.settings import PulseSettings
from core.topics import ensure_topics, topic_specs
from streaming.api.app import create_app
from streaming.api.delivery import AcknowledgedProducer
from streaming.profiles.store import RedisProfileStore

pytestmark = pytest.mark.integration

WRITE_KEY, READ_KEY = "fuzz-write", "fuzz-read"
SEGMENT_BATCH_PATHS = ("/v1/batch", "/v1/b")  # /v1/b: analytics-next's batching strategy
SEGMENT_PATHS = (
    *SEGMENT_BATCH_PATHS,
    *("/v1/track", "/v1/page", "/v1/screen", "/v1/identify", "/v1/alias", "/v1/group"),
    *("/v1/t", "/v1/p", "/v1/i", "/v1/a", "/v1/g", "/v1/s"),  # analytics-next's compact routes
)
READ_PATHS = ("/v1/profiles/", "/v1/decisions/")
FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))

_text = {"type": "string"}
_object = {"type": "object"}
SEGMENT_MESSAGE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "type": {"enum": ["track", "page", "screen", "identify", "alias", "group", "unknown"]},
        "event": {
            "enum": [
                "Product Clicked",
                "Product Added",
                "Product Removed",
                "Order Completed",
                "Products Searched",
                "Product Viewed",
                "",
                "  ",
            ]
        },
        "messageId": {"anyOf": [{"type": "string", "format": "uuid"}, _text, {"type": "integer"}]},
        "userId": {"anyOf": [_text, {"type": "number"}, {"type": "null"}]},
        "anonymousId": _text,
        "previousId": _text,
        "writeKey": _text,
        "groupId": {"anyOf": [_text, {"type": "integer"}, {"type": "null"}]},
        "name": _text,
        "category": _text,
        "timestamp": {"anyOf": [{"type": "string", "format": "date-time"}, _text]},
        "sentAt": {"type": "string", "format": "date-time"},
        "properties": {
            "type": "object",
            "properties": {
                "product_id": _text,
                "category": _text,
                "price": {"type": "number"},
                "revenue": {"type": "number"},
                "quantity": {"type": "integer"},
                "order_id": _text,
                "query": _text,
            },
        },
        "traits": _object,
        "context": {
            "type": "object",
            "properties": {
                "ip": _text,
                "userAgent": _text,
                "page": {"type": "object", "properties": {"url": _text, "referrer": _text}},
                "campaign": {"type": "object", "properties": {"name": _text, "source": _text}},
            },
        },
    },
}
SEGMENT_BATCH = {
    "type": "object",
    "properties": {
        "batch": {"type": "array", "items": SEGMENT_MESSAGE, "maxItems": 20},
        "sentAt": {"type": "string", "format": "date-time"},
        "writeKey": _text,
    },
}


def fuzzable_openapi(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI with a Segment request body on the endpoints that read the raw request."""
    schema = copy.deepcopy(app.openapi())
    for path in SEGMENT_PATHS:
        body = SEGMENT_BATCH if path in SEGMENT_BATCH_PATHS else SEGMENT_MESSAGE
        schema["paths"][path]["post"]["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
    return schema


class Deferred:
    """Stands in for the producer or store until the fixtures start them (see the note below)."""

    def __init__(self) -> None:
        self.target: Any = None

    def __getattr__(self, name: str) -> Any:
        if self.target is None:
            raise RuntimeError("the api fixture has not started the broker/Redis clients")
        return getattr(self.target, name)


# schemathesis.pytest.from_fixture (the lazy loader) fails under pytest 9 (it sets Function._nodeid,
# which pytest 9 no longer has), so the schema is loaded eagerly from an app whose producer and
# store are bound to the real broker and Redis by the `api` fixture at run time.
SUFFIX = uuid.uuid4().hex[:8]
PULSE = PulseSettings(
    write_keys=[WRITE_KEY],
    read_keys=[READ_KEY],
    topic_events=f"fuzz-events-{SUFFIX}",
    topic_dlq=f"fuzz-dlq-{SUFFIX}",
    topic_partitions=1,
)
PRODUCER, STORE = Deferred(), Deferred()
APP = create_app(PULSE, producer=PRODUCER, store=STORE)  # type: ignore[arg-type]
schema = schemathesis.openapi.from_dict(fuzzable_openapi(APP))
schema.app = APP


@pytest.fixture(scope="module")
def api(broker: str, redis_url: str) -> Iterator[FastAPI]:
    """The app of the schema, producing to fresh topics on the real broker, profiles in the real Redis."""
    ensure_topics(AdminClient({"bootstrap.servers": broker}), topic_specs(PULSE))
    PRODUCER.target = AcknowledgedProducer(durable_producer_config(PULSE, broker))
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    STORE.target = RedisProfileStore(client, dedupe_window_seconds=3600, session_gap_ms=1_800_000)
    yield APP
    PRODUCER.target.close()
    client.close()
    PRODUCER.target = STORE.target = None


def key_headers(path: str) -> dict[str, str]:
    """The right credentials for an operation: write key (Basic user for Segment), read key for reads."""
    if path in SEGMENT_PATHS:
        return {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}
    if path.startswith(READ_PATHS):
        return {"X-Pulse-Key": READ_KEY}
    return {"X-Pulse-Key": WRITE_KEY}


def assert_answer_is_sound(response: Any, case: Any) -> None:
    """No 5xx; a 4xx says why; a rejected event says why."""
    where = f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
    assert response.status_code < 500 or (case.path == "/healthz" and response.status_code == 503), where
    if 400 <= response.status_code < 500:
        detail = response.json().get("detail")
        assert detail, where
        if isinstance(detail, list):  # FastAPI's request validation errors
            assert all(item.get("msg") for item in detail), where
    if case.path in ("/v1/events", *SEGMENT_PATHS) and response.status_code in (200, 202):
        body = response.json()
        assert isinstance(body["accepted"], int), where
        assert all(r["error"] for r in body["rejected"]), where


@schema.parametrize()
@FUZZ
def test_api_with_the_key_of_each_scope(api, case):
    case.headers = {**(case.headers or {}), **key_headers(case.path)}
    assert_answer_is_sound(case.call(), case)


@schema.parametrize()
@FUZZ
def test_api_with_generated_credentials(api, case):
    assert_answer_is_sound(case.call(), case)


def test_segment_single_call_routes_take_no_call_parameter(api):
    # A track call without an event name is rejected; ?call=page must not turn it into a page view.
    message = {"messageId": str(uuid.uuid4()), "userId": "u1", "timestamp": "2024-04-25T14:23:05Z"}
    with TestClient(api) as client:
        answer = client.post("/v1/track?call=page", json=message, headers=key_headers("/v1/track")).json()
    parameters = {
        p["name"]
        for path in SEGMENT_PATHS
        for p in api.openapi()["paths"][path]["post"].get("parameters", [])
    }
    assert (answer["accepted"], "call" in parameters) == (0, False)
