"""The webhook relay's pure parts and its delivery loop: signatures, backoff, idempotency key, sink."""

from __future__ import annotations

import hashlib
import hmac
import json
from concurrent.futures import Executor, Future
from typing import Any

import httpx
import pytest

from core.settings import DEV_WEBHOOK_SECRET, PulseSettings
from streaming.dlq import read_dlq_headers
from streaming.relay.delivery import DeliveryResult, deliver_webhook
from streaming.relay.outbound import (
    ATTEMPT_HEADER,
    IDEMPOTENCY_HEADER,
    LEGACY_IDEMPOTENCY_HEADER,
    read_trigger,
    request_headers,
)
from streaming.relay.policy import RetryPolicy, max_poll_interval_ms
from streaming.relay.secret import MissingWebhookSecretError, signing_secret
from streaming.relay.signing import SIGNATURE_HEADER, SignatureError, signature_header, verify
from streaming.relay.sink import DeadLetterError, RelaySink

SECRET = "whsec-test"
DECISION = {
    "decision_id": "5f0c6f4e-1b1c-5d5e-9a3b-0c7a3e1d2f10",
    "rule": "notify_crm",
    "action": "webhook",
    "url": "http://hooks.example/in?token=abc",
    "profile_id": "u1",
}
RAW = json.dumps(DECISION).encode()


# --- signatures -------------------------------------------------------------------------


def test_signature_is_hmac_sha256_of_timestamp_dot_body_and_verifies():
    header = signature_header(SECRET, 1_700_000_000, RAW)
    expected = hmac.new(SECRET.encode(), b"1700000000." + RAW, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert verify(SECRET, header, RAW, now=1_700_000_010) == 1_700_000_000


@pytest.mark.parametrize(
    ("secret", "header", "body", "now", "message"),
    [
        ("other", None, RAW, 1_700_000_000, "does not match"),
        (SECRET, None, RAW + b" ", 1_700_000_000, "does not match"),
        (SECRET, None, RAW, 1_700_000_301, "more than 300s"),
        (SECRET, "", RAW, 1_700_000_000, "no Pulse-Signature"),
        (SECRET, "v1=abc", RAW, 1_700_000_000, "malformed"),
        (SECRET, "t=soon,v1=abc", RAW, 1_700_000_000, "malformed"),
    ],
)
def test_a_wrong_secret_changed_body_stale_or_malformed_signature_is_refused(
    secret, header, body, now, message
):
    header = signature_header(secret, 1_700_000_000, RAW) if header is None else header
    with pytest.raises(SignatureError, match=message):
        verify(SECRET, header, body, now=now)


def test_any_matching_v1_of_several_verifies():  # e.g. while rotating secrets
    good = signature_header(SECRET, 1_700_000_000, RAW).split("v1=")[1]
    assert verify(SECRET, f"t=1700000000,v1={'0' * 64},v1={good}", RAW, now=1_700_000_000)


# --- backoff ----------------------------------------------------------------------------


def test_backoff_doubles_from_the_first_delay_up_to_the_cap():
    policy = RetryPolicy(attempts=7, timeout=1.0, first_delay=0.5, max_delay=6.0)
    assert policy.schedule() == [0.5, 1.0, 2.0, 4.0, 6.0, 6.0]


def test_retry_after_is_honoured_up_to_the_cap_and_never_shortens_the_backoff():
    policy = RetryPolicy(attempts=5, first_delay=0.5, max_delay=10.0)
    assert policy.delay_after(1, "3") == 3.0
    assert policy.delay_after(1, "120") == 10.0
    assert policy.delay_after(3, "0") == 2.0
    assert policy.delay_after(1, "Wed, 21 Oct 2015 07:28:00 GMT") == 0.5  # a date: the backoff


def test_the_poll_interval_outlasts_a_checkpoint_of_slow_failures():
    policy = RetryPolicy(attempts=6, timeout=5.0, first_delay=0.5, max_delay=30.0)
    assert policy.worst_case_seconds() == 6 * 15 + 5 * 30
    assert max_poll_interval_ms(policy, 64, 8) == (8 * 240 + 60) * 1000
    assert max_poll_interval_ms(RetryPolicy(attempts=1, timeout=1, max_delay=1), 1, 1) == 300_000


# --- trigger records and headers ----------------------------------------------------------


def test_only_webhook_decisions_are_delivered_and_bad_records_are_dead_lettered():
    outbound = read_trigger(RAW)
    assert (outbound.decision_id, outbound.url, outbound.error) == (
        DECISION["decision_id"],
        DECISION["url"],
        None,
    )
    assert not read_trigger(json.dumps({**DECISION, "action": "banner"}).encode()).is_webhook
    for raw, reason in [
        (None, "null value"),
        (b"{not json", "not JSON"),
        (json.dumps({**DECISION, "decision_id": ""}).encode(), "without a decision_id"),
        (json.dumps({**DECISION, "url": "ftp://x"}).encode(), "no http(s) url"),
    ]:
        bad = read_trigger(raw)
        assert bad.is_webhook and reason in bad.error


def test_the_idempotency_key_is_the_decision_id_on_every_attempt_and_redelivery():
    first = request_headers(read_trigger(RAW), SECRET, 1_700_000_000, 1)
    again = request_headers(read_trigger(RAW), SECRET, 1_700_000_900, 3)  # after a crash, later
    for headers in (first, again):
        assert headers[IDEMPOTENCY_HEADER] == headers[LEGACY_IDEMPOTENCY_HEADER] == DECISION["decision_id"]
        verify(SECRET, headers[SIGNATURE_HEADER], RAW, now=int(headers[SIGNATURE_HEADER][2:12]))
    assert (first[ATTEMPT_HEADER], again[ATTEMPT_HEADER]) == ("1", "3")


# --- delivery -----------------------------------------------------------------------------


def _client(answers: list[Any], seen: list[httpx.Request]) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers[min(len(seen), len(answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return httpx.Client(transport=httpx.MockTransport(handler))


def test_delivery_retries_5xx_429_and_network_errors_with_backoff_then_succeeds():
    seen: list[httpx.Request] = []
    answers = [
        httpx.Response(503),
        httpx.Response(429, headers={"Retry-After": "4"}),
        httpx.ConnectError("refused"),
        httpx.Response(204),
    ]
    slept: list[float] = []
    policy = RetryPolicy(attempts=5, timeout=1.0, first_delay=0.5, max_delay=10.0)
    result = deliver_webhook(
        _client(answers, seen),
        read_trigger(RAW),
        secret=SECRET,
        policy=policy,
        sleep=slept.append,
        clock=lambda: 1_700_000_000,
    )
    assert result == DeliveryResult(DECISION["decision_id"], 4)
    assert slept == [0.5, 4.0, 2.0]
    assert [r.headers[ATTEMPT_HEADER] for r in seen] == ["1", "2", "3", "4"]
    assert {r.headers[IDEMPOTENCY_HEADER] for r in seen} == {DECISION["decision_id"]}
    assert all(r.content == RAW for r in seen)
    verify(SECRET, seen[-1].headers[SIGNATURE_HEADER], seen[-1].content, now=1_700_000_000)


def test_a_final_4xx_is_not_retried_and_the_reason_names_the_host_not_the_token():
    seen: list[httpx.Request] = []
    result = deliver_webhook(
        _client([httpx.Response(410)], seen),
        read_trigger(RAW),
        secret=SECRET,
        policy=RetryPolicy(attempts=5),
        sleep=lambda _: None,
    )
    assert len(seen) == 1 and not result.delivered
    assert result.error == "HTTP 410 from hooks.example (not retried)" and "abc" not in result.error


def test_delivery_gives_up_after_the_last_attempt():
    seen: list[httpx.Request] = []
    slept: list[float] = []
    result = deliver_webhook(
        _client([httpx.ReadTimeout("slow")], seen),
        read_trigger(RAW),
        secret=SECRET,
        policy=RetryPolicy(attempts=3, first_delay=1.0, max_delay=5.0),
        sleep=slept.append,
    )
    assert len(seen) == 3 and slept == [1.0, 2.0]  # no wait after the last attempt
    assert result == DeliveryResult(
        DECISION["decision_id"], 3, "ReadTimeout from hooks.example after 3 attempts"
    )


# --- the sink -----------------------------------------------------------------------------


class _Inline(Executor):
    def submit(self, fn, /, *args, **kwargs):  # type: ignore[override]
        future: Future = Future()
        future.set_result(fn(*args, **kwargs))
        return future


class _Producer:
    def __init__(self, fail: bool = False) -> None:
        self.records: list[dict[str, Any]] = []
        self._pending: list[Any] = []
        self._fail = fail

    def produce(self, topic: str, **kwargs: Any) -> None:
        self.records.append({"topic": topic, **kwargs})
        self._pending.append(kwargs["on_delivery"])

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        for callback in self._pending:
            callback("broker down" if self._fail else None, None)
        self._pending = []
        return 0


def _add(sink: RelaySink, raw: bytes | None, offset: int) -> None:
    sink.add(read_trigger(raw), b"u1", 0, [], "triggers", 0, offset)


def test_the_sink_delivers_and_dead_letters_with_reason_and_source_before_the_commit():
    answers = {"ok": DeliveryResult("ok", 1), "bad": DeliveryResult("bad", 6, "HTTP 503 after 6 attempts")}
    delivered: list[str] = []

    def deliver(outbound):
        delivered.append(outbound.decision_id)
        return answers[outbound.decision_id]

    producer = _Producer()
    sink = RelaySink(deliver, producer, "triggers-dlq", pool=_Inline())
    _add(sink, json.dumps({**DECISION, "decision_id": "ok"}).encode(), 1)
    _add(sink, json.dumps({**DECISION, "decision_id": "bad"}).encode(), 2)
    _add(sink, b"{not json", 3)
    sink.flush()
    assert delivered == ["ok", "bad"] and (sink.delivered, sink.dead_lettered) == (1, 2)
    by_reason = {read_dlq_headers(r["headers"])["pulse.error"]: r for r in producer.records}
    assert {r["topic"] for r in producer.records} == {"triggers-dlq"}
    bad = by_reason["HTTP 503 after 6 attempts"]
    assert json.loads(bad["value"])["decision_id"] == "bad" and bad["key"] == b"u1"
    headers = read_dlq_headers(bad["headers"])
    assert headers["pulse.source"] == "relay" and headers["pulse.attempts"] == "6"
    assert headers["pulse.decision_id"] == "bad"
    assert any(reason.startswith("trigger record is not JSON") for reason in by_reason)


def test_the_checkpoint_fails_when_the_broker_refuses_a_dead_letter():
    sink = RelaySink(
        lambda o: DeliveryResult(o.decision_id, 1, "HTTP 410"), _Producer(fail=True), "dlq", pool=_Inline()
    )
    _add(sink, RAW, 1)
    with pytest.raises(DeadLetterError, match="did not acknowledge"):
        sink.flush()


# --- the secret ---------------------------------------------------------------------------


def test_the_relay_needs_a_secret_outside_dev_mode():
    assert signing_secret(PulseSettings(webhook_secret="s3cret")) == "s3cret"
    assert signing_secret(PulseSettings(dev_mode=True)) == DEV_WEBHOOK_SECRET
    with pytest.raises(MissingWebhookSecretError, match="PULSE_WEBHOOK_SECRET"):
        signing_secret(PulseSettings(_env_file=None, webhook_secret=None, dev_mode=False))


def test_the_verification_snippet_in_the_security_docs_works():
    import re
    import time
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text()
    section = doc.split("## Webhook signatures", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    namespace: dict[str, Any] = {}
    exec(compile(snippet, "security.md", "exec"), namespace)  # noqa: S102 - our own documentation
    check = namespace["verify_pulse_webhook"]
    now = int(time.time())
    assert check(SECRET, signature_header(SECRET, now, RAW), RAW)
    assert not check("other", signature_header(SECRET, now, RAW), RAW)
    assert not check(SECRET, signature_header(SECRET, now, RAW), RAW + b" ")
    assert not check(SECRET, signature_header(SECRET, now - 301, RAW), RAW)
    assert not check(SECRET, "v1=00", RAW)


def test_an_invalid_url_is_dead_lettered_at_once_instead_of_stopping_the_relay():
    raw = json.dumps({**DECISION, "url": "http://[::1/x"}).encode()
    result = deliver_webhook(
        httpx.Client(), read_trigger(raw), secret=SECRET, policy=RetryPolicy(attempts=3), sleep=lambda _: None
    )
    assert result.attempts == 1 and result.error.startswith("invalid webhook URL")
