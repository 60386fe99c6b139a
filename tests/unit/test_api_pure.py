import json

import pytest

from core.settings import PulseSettings
from streaming.api.auth import KeyRing, MissingKeysError, Scope, key_from_headers
from streaming.api.ingest import BadRequestBody, BatchTooLarge, events_of_body, plan_ingest
from streaming.api.rate_limit import RateLimiter
from streaming.dlq import read_dlq_headers
from tests.unit.test_event_contract import event


def test_events_of_body_single_batch_and_errors():
    assert events_of_body({"event_id": "x"}) == [{"event_id": "x"}]
    assert events_of_body({"events": [1, 2]}) == [1, 2]
    with pytest.raises(BadRequestBody):
        events_of_body([1])
    with pytest.raises(BadRequestBody):
        events_of_body({"events": "x"})
    with pytest.raises(BadRequestBody):
        events_of_body({"events": [], "extra": 1})
    with pytest.raises(BatchTooLarge):
        events_of_body({"events": [{}] * 501})


def test_plan_routes_valid_to_events_and_invalid_to_dlq_with_reason():
    good, bad = event(), event(event_type="purchase", metadata={"price": 1})
    plan = plan_ingest([good, bad], received_at="2024-01-01T00:00:00Z", events_topic="ev", dlq_topic="dlq")
    assert plan.accepted == 1
    assert [(r.index, r.event_id) for r in plan.rejected] == [(1, bad["event_id"])]
    to_events, to_dlq = plan.records
    assert (to_events.topic, to_events.key) == ("ev", b"u1")
    assert json.loads(to_events.value) == {**good, "received_at": "2024-01-01T00:00:00Z"}
    assert to_dlq.topic == "dlq" and json.loads(to_dlq.value) == bad
    assert read_dlq_headers(to_dlq.headers)["pulse.error"] == "purchase needs metadata.order_id"


def test_plan_rejects_events_over_32kb_after_encoding():
    big = event(metadata={"note": "x" * 40_000})
    plan = plan_ingest([big], received_at="t", events_topic="ev", dlq_topic="dlq")
    assert plan.accepted == 0
    assert "limit is 32768" in plan.rejected[0].error


def test_plan_accepts_an_event_of_exactly_32kb_though_received_at_takes_its_message_past_it():
    from quality.event_contract import MAX_EVENT_BYTES, parse_event

    base = event(metadata={"note": ""})
    exact = event(metadata={"note": "x" * (MAX_EVENT_BYTES - len(json.dumps(base, separators=(",", ":"))))})
    over = event(metadata={"note": exact["metadata"]["note"] + "x"})
    plan = plan_ingest(
        [exact, over], received_at="2024-01-01T00:00:00.000Z", events_topic="ev", dlq_topic="dlq"
    )
    assert plan.accepted == 1 and [r.index for r in plan.rejected] == [1]
    assert "32769 bytes; the limit is 32768" in plan.rejected[0].error
    message = plan.records[0].value
    assert (
        len(message) > MAX_EVENT_BYTES and parse_event(message).event_id == exact["event_id"]
    )  # the profile app takes it


def test_key_ring_scopes_and_dev_fallback():
    ring = KeyRing.from_settings(PulseSettings(write_keys="w1,w2", read_keys="r1"))
    assert ring.scopes_of("w2") == {Scope.WRITE}
    assert ring.scopes_of("r1") == {Scope.READ}
    assert ring.scopes_of("nope") == set()
    dev = KeyRing.from_settings(PulseSettings(dev_mode=True))
    assert dev.scopes_of("dev-write-key") == {Scope.WRITE}
    with pytest.raises(MissingKeysError):
        KeyRing.from_settings(PulseSettings())


def test_key_from_headers():
    assert key_from_headers("k1", "Bearer k2") == "k1"
    assert key_from_headers(None, "Bearer k2") == "k2"
    assert key_from_headers(None, "Basic abc") is None
    assert key_from_headers(None, None) is None


def test_rate_limiter_refills_over_time():
    now = [0.0]
    limiter = RateLimiter(rate=10, burst=20, clock=lambda: now[0])
    assert limiter.allow("k", 20)
    assert not limiter.allow("k", 1)
    assert limiter.allow("other", 5)
    now[0] = 0.5
    assert limiter.allow("k", 5)
    assert not limiter.allow("k", 1)


def test_shared_rate_limiter_counts_alone_while_redis_does_not_answer():
    import redis

    from streaming.api.rate_limit import SharedRateLimiter

    now = [100.0]
    closed = redis.Redis(
        host="127.0.0.1", port=1, socket_timeout=0.25, socket_connect_timeout=0.25
    )  # nothing listens on port 1
    limiter = SharedRateLimiter(closed, rate=1, burst=2, retry_seconds=5, clock=lambda: now[0])
    assert limiter.allow("k") and limiter.allow("k")
    assert not limiter.allow("k")  # the process's own bucket, not an error
    now[0] += 1
    assert limiter.allow("k")
