"""The Python SDK without a network: event building, batching, retries, splitting and the spool."""

from __future__ import annotations

import json
import logging
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from pulse_sdk import ClientClosed, EventContractError, PulseClient, SpoolLocked
from pulse_sdk.batching import (
    MAX_REQUEST_BYTES,
    Outcome,
    backoff_delay,
    body_size,
    classify_response,
    parse_retry_after,
    plan_batches,
    request_body,
    retry_delay,
)
from pulse_sdk.events import build_event, encode_event, format_timestamp
from pulse_sdk.spool import Spool
from quality.event_contract import validate_event

ROOT = Path(__file__).resolve().parents[2]


class FakeCollector:
    """A MockTransport handler: answers from ``respond(events, attempt)`` and records every request."""

    def __init__(self, respond: Callable[[list[dict], int], httpx.Response] | None = None) -> None:
        self.respond = respond or (lambda events, n: accepted(events))
        self.requests: list[list[dict]] = []
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        events = json.loads(request.content)["events"]
        assert request.headers["X-Pulse-Key"] == "k"
        with self.lock:
            self.requests.append(events)
            attempt = len(self.requests)
        return self.respond(events, attempt)

    @property
    def ids(self) -> list[str]:
        return [e["event_id"] for batch in self.requests for e in batch]


def accepted(events: list[dict], rejected: list[dict] | None = None) -> httpx.Response:
    rejected = rejected or []
    return httpx.Response(202, json={"accepted": len(events) - len(rejected), "rejected": rejected})


def make_client(handler, **options) -> PulseClient:
    options = {"backoff_base": 0.01, "max_backoff": 0.05, "register_atexit": False, **options}
    return PulseClient("http://collector", "k", transport=httpx.MockTransport(handler), **options)


def view(client: PulseClient, user: str = "u1", **changes) -> str:
    return client.track("page_view", user_id=user, metadata={"category": "shoes"}, **changes)


# -- events -----------------------------------------------------------------------------------


def test_timestamps_are_utc_with_milliseconds_and_z():
    moment = datetime(2024, 4, 25, 16, 23, 5, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert format_timestamp(moment) == "2024-04-25T14:23:05.123Z"
    with pytest.raises(ValueError, match="no timezone"):
        format_timestamp(datetime(2024, 4, 25))
    event = build_event("click", user_id="u1")
    assert event["timestamp"].endswith("Z") and len(event["timestamp"]) == len("2024-04-25T14:23:05.123Z")
    assert uuid.UUID(event["event_id"]).version == 4


def test_encoded_event_is_what_the_collector_validates():
    event = build_event(
        "purchase", user_id="u1", metadata={"order_id": "o1", "price": 9.5}, timestamp="2024-04-25T14:23:05Z"
    )
    assert validate_event(json.loads(encode_event(event))).event_type == "purchase"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.track("purchase", user_id="u1"), "order_id"),
        (lambda c: c.track("Bad Type", user_id="u1"), "event_type"),
        (lambda c: c.track("click"), "user_id or anonymous_id"),
        (lambda c: c.track("click", user_id="u1", event_id="not-a-uuid"), "UUID"),
        (lambda c: c.track("click", user_id="u1", timestamp="yesterday"), "RFC 3339"),
        (lambda c: c.track("click", user_id="u1", metadata={"price": -1}), "price"),
        (lambda c: c.track("click", user_id="u1", metadata={"blob": "x" * 40_000}), "bytes"),
        (lambda c: c.track("click", user_id="u1", metadata={"when": object()}), "JSON"),
        (lambda c: c.identify("u1", ""), "anonymous_id"),
    ],
)
def test_invalid_events_raise_value_error_at_the_call_site(call, message):
    collector = FakeCollector()
    with make_client(collector) as client:
        with pytest.raises(ValueError, match=message) as info:
            call(client)
        assert isinstance(info.value, EventContractError)
        assert client.queued == 0
    assert collector.requests == []


def test_track_page_identify_build_contract_events():
    collector = FakeCollector()
    fixed = str(uuid.uuid4())
    with make_client(collector) as client:
        assert client.track("click", anonymous_id="a1", event_id=uuid.UUID(fixed)) == fixed
        client.page(user_id="u1", url="https://shop/p1", category="shoes", metadata={"utm_source": "mail"})
        client.identify("u1", "a1", {"plan": "pro"})
        assert client.flush(5)
    click, page, identify = [e for batch in collector.requests for e in batch]
    assert click["event_id"] == fixed and "user_id" not in click
    assert page["event_type"] == "page_view"
    assert page["metadata"] == {"utm_source": "mail", "url": "https://shop/p1", "category": "shoes"}
    assert identify == {
        **identify,
        "user_id": "u1",
        "anonymous_id": "a1",
        "metadata": {"traits": {"plan": "pro"}},
    }


def test_identify_needs_only_the_user_id():
    collector = FakeCollector()
    with make_client(collector) as client:
        client.identify("u1")
        assert client.flush(5)
    (identify,) = [e for batch in collector.requests for e in batch]
    assert identify["user_id"] == "u1" and "anonymous_id" not in identify and "metadata" not in identify


# -- batching and retry timing (pure) ---------------------------------------------------------


def test_plan_batches_respects_event_and_byte_limits():
    assert [list(r) for r in plan_batches([10] * 7, max_events=3)] == [[0, 1, 2], [3, 4, 5], [6]]
    # Body = 13 envelope bytes + sizes + commas: 13 + 40 + 40 + 1 = 94 fits 94, a third does not.
    assert [list(r) for r in plan_batches([40, 40, 40], max_bytes=94)] == [[0, 1], [2]]
    assert [list(r) for r in plan_batches([40, 40, 40], max_bytes=93)] == [[0], [1], [2]]
    assert [list(r) for r in plan_batches([500, 10], max_bytes=100)] == [[0], [1]]  # too big alone
    assert list(plan_batches([])) == []


def test_default_limits_keep_full_batches_under_512_kb():
    sizes = [30_000] * 40
    spans = list(plan_batches(sizes))
    assert all(body_size([sizes[i] for i in span]) <= MAX_REQUEST_BYTES for span in spans)
    assert sum(len(s) for s in spans) == 40 and len(spans) == 3
    raws = [b'{"a":1}', b'{"b":2}']
    assert len(request_body(raws)) == body_size([len(r) for r in raws])
    assert json.loads(request_body(raws)) == {"events": [{"a": 1}, {"b": 2}]}


def test_backoff_is_exponential_capped_and_jittered():
    rng = random.Random(3)
    for attempt in range(1, 30):
        ceiling = min(30.0, 0.2 * 2 ** (attempt - 1))
        assert ceiling / 2 <= backoff_delay(attempt, base=0.2, cap=30.0, rng=rng) <= ceiling
    assert backoff_delay(10_000, base=0.2, cap=30.0, rng=rng) <= 30.0
    delays = {backoff_delay(5, base=0.2, cap=30.0, rng=rng) for _ in range(20)}
    assert len(delays) > 1  # jitter: clients that failed together do not retry together
    assert retry_delay(1, 7.0, base=0.2, cap=30.0, rng=rng) == 7.0  # Retry-After wins when longer


def test_retry_after_seconds_and_http_dates():
    now = datetime(2024, 4, 25, 14, 0, 0, tzinfo=UTC)
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Thu, 25 Apr 2024 14:00:10 GMT", now=now) == 10.0
    assert parse_retry_after("Thu, 25 Apr 2024 13:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("99999") == 600.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (202, Outcome.ACCEPTED),
        (400, Outcome.FATAL),
        (401, Outcome.FATAL),
        (403, Outcome.FATAL),
        (413, Outcome.TOO_LARGE),
        (429, Outcome.RETRY),
        (500, Outcome.RETRY),
        (503, Outcome.RETRY),
        (408, Outcome.RETRY),
        (404, Outcome.FATAL),
    ],
)
def test_status_classification(status, outcome):
    answer = classify_response(status, {"retry-after": "2"}, b'{"detail": "why"}')
    assert answer.outcome is outcome
    if outcome is Outcome.RETRY:
        assert answer.retry_after == 2.0


def test_rejections_are_read_from_the_202_body():
    body = json.dumps({"accepted": 1, "rejected": [{"index": 1, "event_id": "e", "error": "bad"}]}).encode()
    (rejection,) = classify_response(202, {}, body).rejected
    assert (rejection.index, rejection.event_id, rejection.error) == (1, "e", "bad")


# -- the client against a fake collector ------------------------------------------------------


def test_events_go_in_batches_of_batch_size():
    collector = FakeCollector()
    with make_client(collector, batch_size=100, flush_interval=60) as client:
        ids = [view(client) for _ in range(250)]
        assert client.flush(5)
    assert sorted(len(b) for b in collector.requests) == [50, 100, 100]
    assert collector.ids == ids  # in order, each once
    assert client.stats.delivered == 250


def test_flush_interval_sends_a_partial_batch_without_flush():
    collector = FakeCollector()
    client = make_client(collector, batch_size=100, flush_interval=0.05)
    view(client)
    deadline = time.monotonic() + 5
    while not collector.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(collector.requests) == 1
    client.close()


def test_503_and_network_errors_are_retried_with_the_same_event_ids():
    def respond(events, attempt):
        if attempt == 1:
            raise httpx.ConnectError("connection refused")
        if attempt == 2:
            return httpx.Response(503, json={"detail": "broker down"}, headers={"Retry-After": "0"})
        if attempt == 3:
            return httpx.Response(429, headers={"Retry-After": "0"})
        return accepted(events)

    collector = FakeCollector(respond)
    with make_client(collector) as client:
        ids = [view(client, f"u{i}") for i in range(5)]
        assert client.flush(5)
    assert [[e["event_id"] for e in b] for b in collector.requests[1:]] == [ids, ids, ids]
    assert client.stats.retries == 3 and client.stats.delivered == 5
    assert "429" in client.stats.last_error


def test_retry_after_is_honoured():
    times: list[float] = []

    def respond(events, attempt):
        times.append(time.monotonic())
        return httpx.Response(503, headers={"Retry-After": "0.3"}) if attempt == 1 else accepted(events)

    with make_client(FakeCollector(respond)) as client:
        view(client)
        assert client.flush(5)
    assert times[1] - times[0] >= 0.3


def test_413_splits_the_batch_into_halves_until_it_fits():
    def respond(events, attempt):
        return httpx.Response(413, json={"detail": "too large"}) if len(events) > 3 else accepted(events)

    collector = FakeCollector(respond)
    with make_client(collector, batch_size=10, flush_interval=60) as client:
        ids = [view(client) for _ in range(10)]
        assert client.flush(5)
    sizes = [len(b) for b in collector.requests]
    assert sizes[:3] == [10, 5, 2]  # 10 -> 5 -> 2 + 3, then the other half the same way
    delivered = [e["event_id"] for b in collector.requests if len(b) <= 3 for e in b]
    assert delivered == ids
    assert client.stats.delivered == 10 and client.stats.dropped == 0


def test_rejected_events_are_logged_and_not_retried(caplog):
    def respond(events, attempt):
        return accepted(
            events, [{"index": 1, "event_id": events[1]["event_id"], "error": "schema v2 says no"}]
        )

    collector = FakeCollector(respond)
    with caplog.at_level(logging.WARNING, logger="pulse_sdk"):
        with make_client(collector, flush_interval=60) as client:
            ids = [view(client) for _ in range(3)]
            assert client.flush(5)
    assert len(collector.requests) == 1
    assert client.stats.delivered == 2 and client.stats.rejected == 1
    assert f"collector rejected event {ids[1]}: schema v2 says no" in caplog.text


@pytest.mark.parametrize("status", [400, 401, 403])
def test_client_errors_are_logged_and_dropped(status, caplog):
    collector = FakeCollector(lambda events, n: httpx.Response(status, json={"detail": "unknown API key"}))
    with caplog.at_level(logging.ERROR, logger="pulse_sdk"):
        with make_client(collector) as client:
            view(client)
            assert client.flush(5)
    assert len(collector.requests) == 1
    assert client.stats.dropped == 1
    assert f"HTTP {status}: unknown API key" in caplog.text


def test_flush_returns_false_while_the_collector_is_down():
    collector = FakeCollector(lambda events, n: httpx.Response(503))
    client = make_client(collector, shutdown_timeout=0.2)
    view(client)
    assert client.flush(0.3) is False
    client.close()
    assert client.stats.dropped == 1  # no spool: lost, and logged as such


def test_retries_are_bounded_by_max_retries():
    collector = FakeCollector(lambda events, n: httpx.Response(500))
    with make_client(collector, max_retries=2) as client:
        view(client)
        assert client.flush(5)
    assert len(collector.requests) == 3
    assert client.stats.dropped == 1


def test_a_full_queue_drops_the_oldest_with_a_warning(caplog):
    gate = threading.Event()

    def respond(events, attempt):
        gate.wait(5)
        return accepted(events)

    collector = FakeCollector(respond)
    with caplog.at_level(logging.WARNING, logger="pulse_sdk"):
        client = make_client(collector, batch_size=1, max_queue=3, max_block=0.01)
        first = view(client)  # taken by the sender, which then blocks in the request
        while not collector.requests:
            time.sleep(0.005)
        ids = [view(client) for _ in range(5)]
        gate.set()
        assert client.flush(5)
        client.close()
    assert collector.ids == [first, *ids[2:]]
    assert client.stats.dropped == 2
    assert "queue full" in caplog.text


def test_closed_client_refuses_events():
    client = make_client(FakeCollector())
    client.close()
    client.close()  # idempotent
    with pytest.raises(ClientClosed):
        view(client)


# -- the spool --------------------------------------------------------------------------------


def test_spool_segments_round_trip_and_recover_unfinished_writes(tmp_path):
    spool = Spool(tmp_path)
    segment = spool.write([b'{"a":1}', b'{"b":2}'])
    assert spool.segments() == [segment]
    assert spool.read(segment) == [b'{"a":1}', b'{"b":2}']
    spool.remove(segment)
    assert spool.segments() == []
    spool.close()

    # A writer that died before its rename: whole lines survive, the torn one does not.
    (tmp_path / ".0001-dead.tmp").write_bytes(b'{"c":3}\nnot json\n{"d":')
    spool = Spool(tmp_path)
    (recovered,) = spool.segments()
    assert spool.read(recovered) == [b'{"c":3}']
    assert not list(tmp_path.glob(".*.tmp"))
    spool.close()


def test_one_client_per_spool_directory(tmp_path):
    first = Spool(tmp_path)
    with pytest.raises(SpoolLocked, match="in use by another PulseClient"):
        Spool(tmp_path)
    first.close()
    Spool(tmp_path).close()


def test_undelivered_events_survive_in_the_spool_and_the_next_client_sends_them(tmp_path):
    down = FakeCollector(lambda events, n: httpx.Response(503))
    client = make_client(down, spool_dir=tmp_path, shutdown_timeout=0.2)
    ids = [view(client, f"u{i}") for i in range(7)]
    client.close()
    assert client.stats.spooled == 7
    assert len(list(tmp_path.glob("*.jsonl"))) >= 1

    up = FakeCollector()
    with make_client(up, spool_dir=tmp_path) as client:
        assert client.flush(5)
    assert sorted(up.ids) == sorted(ids)
    assert not list(tmp_path.glob("*.jsonl"))


def test_exhausted_retries_spool_and_resend_once_the_collector_answers(tmp_path):
    healthy = threading.Event()
    collector = FakeCollector(lambda events, n: accepted(events) if healthy.is_set() else httpx.Response(502))
    with make_client(collector, spool_dir=tmp_path, max_retries=1, max_backoff=0.1) as client:
        first = view(client)
        while client.stats.spooled == 0:
            time.sleep(0.01)
        assert client.flush(0.2) is False  # spooled events count as not yet delivered
        healthy.set()
        second = view(client)
        assert client.flush(5)
    accepted_ids = [e["event_id"] for b in collector.requests[-2:] for e in b]
    assert sorted(accepted_ids) == sorted([first, second])
    assert not list(tmp_path.glob("*.jsonl"))


def test_a_full_queue_spills_to_the_spool_instead_of_dropping(tmp_path):
    gate = threading.Event()

    def respond(events, attempt):
        gate.wait(5)
        return accepted(events)

    collector = FakeCollector(respond)
    client = make_client(collector, batch_size=2, max_queue=4, max_block=0.01, spool_dir=tmp_path)
    ids = [view(client) for _ in range(2)]
    while not collector.requests:
        time.sleep(0.005)
    ids += [view(client) for _ in range(8)]
    assert client.stats.spooled >= 2 and client.stats.dropped == 0
    gate.set()
    assert client.flush(5)
    client.close()
    assert sorted(collector.ids) == sorted(ids)


# -- atexit, with a real HTTP server ----------------------------------------------------------


def test_events_are_flushed_at_interpreter_exit():
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.extend(json.loads(body)["events"])
            payload = b'{"accepted": 1, "rejected": []}'
            self.send_response(202)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    script = (
        "from pulse_sdk import PulseClient\n"
        f"c = PulseClient('127.0.0.1:{server.server_port}', 'k', flush_interval=60)\n"
        "print(c.track('click', user_id='u1'))\n"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
    finally:
        server.shutdown()
    assert out.returncode == 0, out.stderr
    assert [e["event_id"] for e in received] == [out.stdout.strip()]
