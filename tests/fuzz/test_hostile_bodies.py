"""Hostile input against the collector, in process, with a real broker and Redis.

Huge numbers, deep nesting, many keys, invalid UTF-8, NaN literals, gzip bombs, ids crafted
to collide Redis keys, very long ids and control characters. Invariants: no 5xx, every
rejection says why, and the valid events of a batch still go through.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import uuid
import zlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import redis
from confluent_kafka.admin import AdminClient
from fastapi import FastAPI
from fastapi.testclient import TestClient

from core.kafka_config import durable_producer_config
from core.settings import PulseSettings
from core.topics import ensure_topics, topic_specs
from quality.event_contract import MAX_ID_LENGTH, parse_event
from streaming.api.app import create_app
from streaming.api.delivery import AcknowledgedProducer
from streaming.api.routes_segment import SEGMENT_MAX_BODY_BYTES
from streaming.profiles.delta import profile_delta
from streaming.profiles.store import RedisProfileStore
from tests.fuzz.strategies import HOSTILE_IDS

pytestmark = pytest.mark.integration

WRITE_KEY, READ_KEY = "hostile-write", "hostile-read"
WRITE = {"X-Pulse-Key": WRITE_KEY, "Content-Type": "application/json"}
READ = {"X-Pulse-Key": READ_KEY}
SEGMENT_AUTH = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}


class Collector:
    """The in-process API plus the pieces a test reads back."""

    def __init__(
        self, app: FastAPI, client: TestClient, store: RedisProfileStore, redis_client: redis.Redis
    ) -> None:
        self.app, self.client, self.store, self.redis = app, client, store, redis_client

    def request_exact_path(self, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
        """A request whose path is percent-decoded once, as a real server does.

        Starlette's TestClient decodes the path twice ('%257B' reaches the app as '{'), which
        would hide or fake key collisions; httpx's ASGI transport decodes it once.
        """

        async def call() -> httpx.Response:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=self.app), base_url="http://testserver"
            ) as client:
                return await client.request(method, path, headers=headers)

        return asyncio.run(call())

    def post(self, path: str, body: bytes | str, headers: dict[str, str] | None = None):
        response = self.client.post(path, content=body, headers=headers if headers is not None else WRITE)
        assert_sound(response)
        return response


@pytest.fixture(scope="module")
def collector(broker: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    suffix = uuid.uuid4().hex[:8]
    settings = PulseSettings(
        data_dir=tmp_path_factory.mktemp("hostile"),
        kafka_brokers=broker,
        redis_url=redis_url,
        write_keys=[WRITE_KEY],
        read_keys=[READ_KEY],
        topic_events=f"hostile-events-{suffix}",
        topic_dlq=f"hostile-dlq-{suffix}",
        topic_partitions=1,
    )
    ensure_topics(AdminClient({"bootstrap.servers": broker}), topic_specs(settings))
    producer = AcknowledgedProducer(durable_producer_config(settings, broker))
    redis_client = redis.Redis.from_url(redis_url, socket_timeout=5)
    store = RedisProfileStore(redis_client, dedupe_window_seconds=3600, session_gap_ms=1_800_000)
    app = create_app(settings, producer=producer, store=store)
    # A 500 is an answer to check, not an exception in the test.
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Collector(app, client, store, redis_client)
    producer.close()
    redis_client.close()


def assert_sound(response: Any) -> None:
    """No 5xx; a 4xx says why; each rejected event says why."""
    where = f"{response.status_code}: {response.text[:300]}"
    assert response.status_code < 500, where
    body = response.json()
    if response.status_code >= 400:
        assert body.get("detail"), where
    if response.status_code in (200, 202) and "rejected" in body:
        assert all(r["error"] for r in body["rejected"]), where


def good_event(**changes: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "page_view",
        "user_id": "u1",
        "timestamp": "2024-04-25T14:23:05.123Z",
        "metadata": {"product_id": "p1", "category": "shoes"},
        **changes,
    }


def in_a_batch(hostile: str) -> str:
    """A batch: valid, the hostile event (JSON text), valid."""
    return '{"events": [%s, %s, %s]}' % (
        json.dumps(good_event()),
        hostile,
        json.dumps(good_event(user_id="u2")),
    )


def event_text(metadata_json: str, **changes: Any) -> str:
    """An event as JSON text whose metadata is raw JSON (for literals Python cannot produce)."""
    head = json.dumps(good_event(**changes))[:-1]
    return (
        head.replace(', "metadata": {"product_id": "p1", "category": "shoes"}', "")
        + f', "metadata": {metadata_json}}}'
    )


# -- bodies the parser must refuse ----------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"1e400",
        event_text('{"price": 1e400}').encode(),
        event_text('{"price": -1e400}').encode(),
        event_text('{"price": NaN}').encode(),
        event_text('{"price": Infinity}').encode(),
        event_text('{"price": -Infinity}').encode(),
        b"\xff\xfe\xfd",
        json.dumps(good_event(user_id="u-\u00e9"), ensure_ascii=False)
        .encode()
        .replace(b"\xc3\xa9", b"\xe9"),  # latin-1 byte inside a string
        json.dumps(good_event()).encode().replace(b'"u1"', b'"u\xed\xa0\x80"'),  # an encoded surrogate
        b"\xef\xbb\xbf" + json.dumps(good_event()).encode(),  # byte-order mark
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        b'{"events": [' + b"[" * 5_000 + b"]" * 5_000 + b"]}",
        b"",
        b"{",
        b"\x00",
    ],
    ids=lambda b: repr(b[:30]),
)
def test_unparseable_bodies_are_400_with_a_reason(collector, body):
    response = collector.post("/v1/events", body)
    assert response.status_code in (400, 413), response.text
    assert collector.post("/v1/events", json.dumps(good_event())).status_code == 202


# -- events the contract must refuse, while their batch-mates go through --------------------------

HOSTILE_EVENTS: dict[str, str] = {
    "quantity 2**70": json.dumps(good_event(metadata={"quantity": 2**70})),
    "price 2**70": json.dumps(good_event(metadata={"price": 2**70})),
    "price 1e308": json.dumps(good_event(metadata={"price": 1e308})),
    "purchase price -0.0 and no order": json.dumps(
        good_event(event_type="purchase", metadata={"price": -0.0})
    ),
    "10k top-level keys": json.dumps({**good_event(), **{f"k{i}": i for i in range(10_000)}}),
    "10k metadata keys": json.dumps(good_event(metadata={f"k{i}": i for i in range(10_000)})),
    "user_id too long": json.dumps(good_event(user_id="u" * (MAX_ID_LENGTH + 1))),
    "user_id 100 KB": json.dumps(good_event(user_id="u" * 100_000)),
    "product_id too long": json.dumps(good_event(metadata={"product_id": "p" * (MAX_ID_LENGTH + 1)})),
    "event_type with a NUL": json.dumps(good_event(event_type="page\u0000view")),
    "event_type with a newline inside": json.dumps(good_event(event_type="page\nview")),
    "event_type upper case": json.dumps(good_event(event_type="PAGE_VIEW")),
    "event_id with a newline": json.dumps(good_event(event_id=str(uuid.uuid4()) + "\n")),
    "event_id as object": json.dumps(good_event(event_id={"$gt": ""})),
    "user_id only spaces and controls": json.dumps(good_event(user_id=" \t\r\n\u000b")),
    "user_id as array": json.dumps(good_event(user_id=["a", "b"])),
    "timestamp without zone": json.dumps(good_event(timestamp="2024-04-25T14:23:05")),
    "timestamp 10 KB": json.dumps(good_event(timestamp="2" * 10_000)),
    "metadata as string": json.dumps(good_event(metadata="{}")),
    "a bare number": "1180591620717411303424",
    "null": "null",
    "deeply nested metadata": event_text('{"x": %s}' % ("[" * 5_000 + "]" * 5_000)),
}


@pytest.mark.parametrize("name", HOSTILE_EVENTS)
def test_hostile_event_is_rejected_with_a_reason_and_its_batch_mates_accepted(collector, name):
    hostile = HOSTILE_EVENTS[name]
    body = in_a_batch(hostile)
    response = collector.post("/v1/events", body)
    if len(body) > 512 * 1024:
        assert response.status_code == 413
        return
    if response.status_code == 400:  # unparseable as a whole (nesting): a reason, nothing half-accepted
        assert "JSON" in response.json()["detail"]
        return
    assert response.status_code == 202, response.text
    result = response.json()
    assert result["accepted"] == 2, result
    assert [r["index"] for r in result["rejected"]] == [1]
    assert len(result["rejected"][0]["error"]) < 100_000


@pytest.mark.parametrize(
    "metadata",
    [
        {"note": 2**70},  # a big integer where the contract has no rule: accepted, kept exactly
        {"note": -(2**70), "other": 1e308, "tiny": 5e-324},
        {"nested": json.loads("[" * 50 + "1" + "]" * 50)},
        {"text": "\u0000\u0001\u001b[31m\u2028\u2029\ufeff\U0001f600"},
        {"product_id": "\u0000"},
    ],
    ids=["bigint", "extremes", "nested-50", "control-chars", "nul-product"],
)
def test_strange_but_valid_metadata_is_accepted(collector, metadata):
    response = collector.post("/v1/events", in_a_batch(json.dumps(good_event(metadata=metadata))))
    assert response.json() == {"accepted": 3, "rejected": []}


def test_nesting_up_to_the_parser_limit_never_fails_the_server(collector):
    """Around the decoder's recursion limit every depth is either accepted or a 400, never a 500."""
    outcomes = set()
    for depth in [*range(1, 800, 97), *range(800, 1100, 3), 5_000, 50_000]:
        for body in (
            event_text('{"x": %s}' % ("[" * depth + "]" * depth)),
            in_a_batch(event_text('{"x": %s}' % ("[" * depth + "]" * depth))),
        ):
            response = collector.post("/v1/events", body)
            outcomes.add(response.status_code)
    assert outcomes == {202, 400}


# -- ids crafted to collide Redis keys --------------------------------------------------------------


def test_ids_crafted_to_collide_redis_keys_stay_separate_people(collector):
    """Hostile ids are accepted, stored under their own keys, and read back one person each."""
    collector.redis.flushdb()
    ids = [*HOSTILE_IDS, "%257B", "a:b:p", "{tag}:p", "pulse:{a}:p", "*:seen:*"]
    events = [
        good_event(user_id=pid, metadata={"product_id": f"p-{i}"})
        for i, pid in enumerate(ids)
        for _ in range(i % 3 + 1)
    ]
    response = collector.post("/v1/events", json.dumps({"events": events}))
    assert response.json() == {"accepted": len(events), "rejected": []}
    # What the profile app would do with the records it reads (no app runs in this test).
    deltas = [profile_delta(e, "") for e in (parse_event(json.dumps(e).encode()) for e in events)]
    assert collector.store.apply_deltas(deltas) == len(events)
    for i, pid in enumerate(ids):
        got = collector.request_exact_path("GET", f"/v1/profiles/{quote(pid, safe='')}", READ)
        assert got.status_code == 200, (pid, got.text)
        profile = got.json()
        assert (profile["profile_id"], profile["user_id"], profile["event_count"]) == (pid, pid, i % 3 + 1)
        assert profile["last_products"] == [f"p-{i}"]
    # Glob characters in ids are data, not patterns.
    assert (
        collector.request_exact_path("DELETE", f"/v1/profiles/{quote('*', safe='')}", READ).json()[
            "forgotten"
        ]
        is True
    )
    assert (
        collector.request_exact_path("GET", f"/v1/profiles/{quote('a:b', safe='')}", READ).json()[
            "event_count"
        ]
        == 1
    )
    assert collector.request_exact_path("GET", f"/v1/profiles/{quote('*', safe='')}", READ).status_code == 404


@pytest.mark.parametrize(
    "pid", ["x" * 10_000, "%00", "%FF%FE", "..", "%2F..%2Fetc", "\u202e", "%0d%0aSet-Cookie:%20a=b"]
)
def test_strange_profile_ids_in_the_path_are_404_not_500(collector, pid):
    for method in ("GET", "DELETE"):
        response = collector.client.request(method, f"/v1/profiles/{pid}", headers=READ)
        assert response.status_code in (200, 202, 404), response.text
        assert_sound(response)
    assert "set-cookie" not in collector.client.get(f"/v1/decisions/{pid}", headers=READ).headers


# -- the Segment endpoint: gzip bombs and odd messages ------------------------------------------


def segment_post(collector: Collector, body: bytes, *, gzipped: bool = False, path: str = "/v1/batch"):
    headers = {**SEGMENT_AUTH, "Content-Type": "application/json"}
    if gzipped:
        headers["Content-Encoding"] = "gzip"
    return collector.post(path, body, headers)


def gzip_bomb(inflated_mb: int) -> bytes:
    """A gzip body that inflates to ``inflated_mb`` MB of JSON whitespace (built without holding it)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b" " * (1024 * 1024)
    parts = [packer.compress(b'{"batch": [')]
    parts += [packer.compress(chunk) for _ in range(inflated_mb)]
    parts += [packer.compress(b"]}"), packer.flush()]
    return b"".join(parts)


def test_gzip_bomb_on_segment_batch_is_413(collector):
    """Refused by the inflated size; that inflating stops at the cap is not timed here (no wall
    clock in tests).
    """
    bomb = gzip_bomb(100)
    assert len(bomb) < 200 * 1024  # 100 MB inflated from about 100 KB
    response = segment_post(collector, bomb, gzipped=True)
    assert response.status_code == 413
    assert "decompressed" in response.json()["detail"]


def test_nested_gzip_and_lies_about_encoding(collector):
    inner = gzip.compress(json.dumps({"batch": []}).encode())
    assert (
        segment_post(collector, gzip.compress(inner), gzipped=True).status_code == 400
    )  # gzip of gzip: not JSON
    assert segment_post(collector, b"not gzip at all", gzipped=True).status_code == 400
    truncated = gzip.compress(b"{}")[:-10]
    assert segment_post(collector, truncated, gzipped=True).status_code == 400
    assert segment_post(collector, inner).status_code == 400  # gzip without the header
    deflate = zlib.compress(json.dumps({"batch": []}).encode())
    assert segment_post(collector, deflate, gzipped=True).status_code == 400
    # Just under the inflated limit is fine.
    padded = b'{"batch": []' + b" " * (SEGMENT_MAX_BODY_BYTES - 20) + b"}"
    assert segment_post(collector, gzip.compress(padded), gzipped=True).status_code == 200


def segment_message(**fields: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Product Clicked",
        "messageId": str(uuid.uuid4()),
        "userId": "u1",
        "timestamp": "2024-04-25T14:23:05Z",
        "properties": {"product_id": "p1"},
        **fields,
    }


@pytest.mark.parametrize(
    "message",
    [
        segment_message(messageId={"$ne": None}),
        segment_message(messageId=2**70),
        segment_message(userId=["a"]),
        segment_message(userId=2**70),
        segment_message(userId=1e308),
        segment_message(userId={"a": 1}),
        segment_message(type="group"),
        segment_message(type={"x": 1}),
        segment_message(event=["x"]),
        segment_message(event="\u0000\u0001"),
        segment_message(event="x" * 100_000),
        segment_message(timestamp="9" * 10_000),
        segment_message(timestamp=2**70),
        segment_message(context="not an object", properties=["no"]),
        segment_message(properties={f"k{i}": i for i in range(10_000)}),
        segment_message(type="alias", previousId={"$where": "1"}),
        segment_message(type="identify", traits={"email": "x@example.com"}, anonymousId="a" * 300),
        "a string",
        None,
        [1, 2],
    ],
)
def test_odd_segment_messages_are_rejected_or_mapped_and_batch_mates_go_through(collector, message):
    body = json.dumps(
        {
            "batch": [segment_message(), message, segment_message(userId="u2")],
            "sentAt": "2024-04-25T14:23:06Z",
        }
    ).encode()
    response = segment_post(collector, body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["accepted"] >= 2
    assert result["accepted"] + len(result["rejected"]) == 3
    assert all(r["index"] == 1 for r in result["rejected"])


@pytest.mark.parametrize(
    "payload",
    [
        {"batch": "nope"},
        {"batch": None},
        {"batch": {"0": {}}},
        {"sentAt": "2024-04-25T14:23:06Z"},
        {"batch": [], "sentAt": {"$gt": 1}},
    ],
)
def test_malformed_segment_batches_are_400_with_a_reason(collector, payload):
    response = segment_post(collector, json.dumps(payload).encode())
    assert response.status_code == 400, response.text


def test_a_segment_batch_of_many_tiny_messages_is_answered_without_a_5xx(collector):
    """The Segment endpoint has no message-count cap; 100k empty messages fit in 500 KB."""
    body = b'{"batch": [' + b",".join([b"{}"] * 100_000) + b"]}"
    assert len(body) < SEGMENT_MAX_BODY_BYTES
    response = segment_post(collector, body)
    assert response.status_code in (200, 413, 429), response.text[:300]
    print("100k empty Segment messages:", response.status_code, len(response.content), "bytes answered")


# -- hostile credentials ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "headers", "body"),
    [
        ("/v1/events", {"X-Pulse-Key": "wrong"}, None),
        ("/v1/events", {"Authorization": "Bearer " + "k" * 100_000}, None),
        ("/v1/events", {"Authorization": "Basic !!!"}, None),
        ("/v1/batch", {"Authorization": "Basic !!!"}, None),
        ("/v1/batch", {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe:").decode()}, None),
        ("/v1/batch", {}, {"batch": [], "writeKey": ["not", "a", "string"]}),
    ],
)
def test_bad_credentials_are_401_with_a_reason(collector, path, headers, body):
    payload = json.dumps(body if body is not None else good_event()).encode()
    response = collector.post(path, payload, {"Content-Type": "application/json", **headers})
    assert response.status_code == 401, response.text


@pytest.mark.parametrize(
    ("path", "headers", "body"),
    [
        ("/v1/events", {"X-Pulse-Key": "\u00e9".encode("latin-1")}, None),
        ("/v1/events?key=%C3%A9", {}, None),
        ("/v1/events", {"Authorization": "Bearer \u00e9".encode("latin-1")}, None),
        ("/v1/batch", {}, {"batch": [], "writeKey": "\u00e9"}),
        ("/v1/batch", {"Authorization": "Basic " + base64.b64encode("\u00e9:".encode()).decode()}, None),
        ("/v1/profiles/u1", {"X-Pulse-Key": "\u00e9".encode("latin-1")}, None),
    ],
    ids=["x-pulse-key", "query-key", "bearer", "segment-writeKey", "segment-basic", "read"],
)
def test_non_ascii_keys_are_401_not_500(collector, path, headers, body):
    payload = json.dumps(body if body is not None else good_event()).encode()
    method = "GET" if path.startswith("/v1/profiles") else "POST"
    response = collector.client.request(
        method,
        path,
        content=payload if method == "POST" else None,
        headers={"Content-Type": "application/json", **headers},
    )
    assert response.status_code == 401, response.text
