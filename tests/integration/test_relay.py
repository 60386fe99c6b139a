"""The webhook relay, real processes: SIGKILLed mid-delivery, every decision arrives, none counts twice."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import SecretStr

from streaming.dlq import read_dlq_headers
from streaming.relay.signing import SignatureError, verify
from tests.integration.helpers import eventually, post_batches
from tests.integration.test_collector_api import read_topic

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SECRET = "integration-webhook-secret"
USERS = 24
FAIL_FIRST = 2  # every decision's first attempts answer 503
RULES = """
rules:
  - id: notify_crm
    on: [identify]
    when: 'true'
    action: {type: webhook, url: "BASE/hook"}
  - id: gone_hook
    on: [purchase]
    when: 'true'
    action: {type: webhook, url: "BASE/gone"}
  - id: welcome
    on: [identify]
    when: 'true'
    action: {type: banner, message: "Welcome"}
  - id: buyers
    on: [purchase]
    when: 'true'
    action: {type: segment, segment: buyer}
"""


class Receiver:
    """A webhook receiver that dedupes by Pulse-Idempotency-Key and fails each key's first attempts.

    While ``hold`` is set, the first key it ever sees keeps failing: the relay's checkpoint that
    holds it cannot commit, so whatever else that checkpoint delivered meanwhile is delivered
    again after a crash.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.attempts: dict[str, int] = {}
        self.counted: dict[str, int] = {}  # key -> times counted (the receiver's dedupe makes it 1)
        self.redelivered: list[str] = []  # requests for keys already counted
        self.problems: list[str] = []
        self.gone = 0
        self.held: str | None = None
        self.hold = threading.Event()
        self.hold.set()

    def handle(self, path: str, headers: Any, body: bytes) -> tuple[int, dict[str, str]]:
        try:
            verify(SECRET, headers.get("Pulse-Signature"), body, now=time.time())
        except SignatureError as exc:
            with self.lock:
                self.problems.append(f"signature: {exc}")
            return 400, {}
        key = headers.get("Pulse-Idempotency-Key")
        decision = json.loads(body)
        with self.lock:
            if key != decision["decision_id"] or headers.get("Idempotency-Key") != key:
                self.problems.append(f"key {key} for decision {decision['decision_id']}")
            if path == "/gone":
                self.gone += 1
                return 410, {}
            self.held = self.held or key
            self.attempts[key] = self.attempts.get(key, 0) + 1
            if key in self.counted:
                self.redelivered.append(key)
                return 200, {}
            if self.attempts[key] <= FAIL_FIRST or (key == self.held and self.hold.is_set()):
                return 503, {"Retry-After": "1"}
            self.counted[key] = 1
            return 200, {}

    def serve(self) -> ThreadingHTTPServer:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status, extra = receiver.handle(self.path, self.headers, body)
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


def _events() -> list[dict]:
    t0 = datetime.now(UTC) - timedelta(minutes=30)
    events = []
    for i in range(USERS):
        user = f"u-{uuid.uuid4().hex[:8]}"
        events.append(
            {
                "event_id": str(uuid.uuid4()),
                "event_type": "identify",
                "user_id": user,
                "timestamp": (t0 + timedelta(seconds=i)).isoformat(),
                "metadata": {"traits": {"plan": "pro"}},
            }
        )
        if i < 3:
            events.append(
                {
                    "event_id": str(uuid.uuid4()),
                    "event_type": "purchase",
                    "user_id": user,
                    "timestamp": (t0 + timedelta(seconds=i, milliseconds=500)).isoformat(),
                    "metadata": {"order_id": f"o-{i}", "price": 10.0},
                }
            )
    return events


def test_relay_killed_mid_delivery_delivers_every_decision_once_to_a_deduping_receiver(
    settings, pulse_apps, redis_client, tmp_path
):
    receiver = Receiver()
    server = receiver.serve()
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(RULES.replace("BASE", f"http://127.0.0.1:{server.server_port}"))
    settings.rules_file = rules_file
    pulse_apps("profile-app")
    pulse_apps("api")
    post_batches(f"http://{settings.api_host}:{settings.api_port}", "test-write", _events(), batch_size=50)
    # Every decision is on the triggers topic before the relay starts (the profile app posts none).
    triggers = [
        json.loads(m.value()) for m in read_topic(settings.kafka_brokers, settings.topic_triggers, 51, 60)
    ]
    webhooks = {d["decision_id"] for d in triggers if d["rule"] == "notify_crm"}
    assert len(webhooks) == USERS and sum(d["rule"] == "gone_hook" for d in triggers) == 3
    assert sum(d["rule"] == "welcome" for d in triggers) == USERS
    assert receiver.attempts == {} and receiver.gone == 0
    # Entering a segment is a profile change too, keyed and deduplicated by its decision id.
    changes = [
        json.loads(m.value()) for m in read_topic(settings.kafka_brokers, settings.topic_profile_changes, 3)
    ]
    segment_decisions = {d["decision_id"]: d for d in triggers if d["rule"] == "buyers"}
    assert {c["change_id"] for c in changes} == segment_decisions.keys() and len(changes) == 3
    for change in changes:
        assert change["type"] == "segment_entered" and change["segment"] == "buyer"
        assert change["profile_id"] == segment_decisions[change["change_id"]]["profile_id"]

    settings.webhook_secret = SecretStr(SECRET)
    settings.webhook_attempts = 40  # the held key fails until the relay is killed
    settings.webhook_backoff_seconds = 0.2
    settings.webhook_backoff_max_seconds = 1.0
    relay = pulse_apps("relay")
    # Killed while its checkpoint waits on the held decision and others of it were accepted.
    assert eventually(lambda: len(receiver.counted) >= 3, timeout=60), relay.log_path.read_text()[-2000:]
    relay.kill()
    counted_before_kill = set(receiver.counted)
    assert receiver.held not in counted_before_kill
    receiver.hold.clear()

    pulse_apps("relay")
    assert eventually(lambda: set(receiver.counted) == webhooks, timeout=90), (
        len(receiver.counted),
        relay.log_path.read_text()[-2000:],
    )
    assert receiver.problems == []
    # The crash made the relay deliver accepted decisions again; the key let the receiver see it.
    assert set(receiver.redelivered) & counted_before_kill
    assert all(count == 1 for count in receiver.counted.values())

    # The 410s were not retried and went to the relay's dead-letter topic with reason and source.
    dead = read_topic(settings.kafka_brokers, settings.topic_triggers_dlq, 3, 30)
    gone = {json.loads(m.value())["decision_id"] for m in dead}
    assert gone == {d["decision_id"] for d in triggers if d["rule"] == "gone_hook"}
    for message in dead:
        headers = read_dlq_headers(message.headers())
        assert headers["pulse.source"] == "relay" and "HTTP 410" in headers["pulse.error"]
    assert receiver.gone >= 3
    server.shutdown()
