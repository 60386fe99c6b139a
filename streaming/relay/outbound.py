"""From a pulse.triggers record to a webhook request (pure): what to POST, where, with which headers."""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec

from streaming.relay.signing import SIGNATURE_HEADER, signature_header

IDEMPOTENCY_HEADER = "Pulse-Idempotency-Key"
#: The same key under the name receivers of the draft IETF header (and Pulse before the relay) read.
LEGACY_IDEMPOTENCY_HEADER = "Idempotency-Key"
ATTEMPT_HEADER = "Pulse-Delivery-Attempt"
USER_AGENT = "pulse-relay/1"

_decode = msgspec.json.Decoder().decode


class Outbound(NamedTuple):
    """One trigger record: a webhook to deliver (``url`` set), a decision to skip, or a bad record."""

    raw: bytes
    decision_id: str = ""
    url: str = ""
    error: str | None = None  # the record cannot be delivered: dead-lettered with this reason

    @property
    def is_webhook(self) -> bool:
        return bool(self.url) or self.error is not None


def read_trigger(raw: bytes | None) -> Outbound:
    """Classify one record of pulse.triggers; never raises for bad input."""
    if raw is None:
        return Outbound(b"", error="empty trigger record (null value)")
    try:
        decision: Any = _decode(raw)
    except msgspec.DecodeError as exc:
        return Outbound(raw, error=f"trigger record is not JSON: {exc}")
    if not isinstance(decision, dict) or decision.get("action") != "webhook":
        return Outbound(raw)
    decision_id, url = decision.get("decision_id"), decision.get("url")
    if not isinstance(decision_id, str) or not decision_id:
        return Outbound(raw, error="webhook decision without a decision_id")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        return Outbound(raw, decision_id, error=f"webhook decision {decision_id} has no http(s) url")
    return Outbound(raw, decision_id, url)


def request_headers(outbound: Outbound, secret: str, timestamp: int, attempt: int) -> dict[str, str]:
    """Headers of one delivery attempt: content type, idempotency key, attempt number, signature.

    The body is the trigger record's bytes unchanged, so the key and the signature are stable
    inputs: a redelivery after a crash sends the same key and a fresh, valid signature.
    """
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        IDEMPOTENCY_HEADER: outbound.decision_id,
        LEGACY_IDEMPOTENCY_HEADER: outbound.decision_id,
        ATTEMPT_HEADER: str(attempt),
        SIGNATURE_HEADER: signature_header(secret, timestamp, outbound.raw),
    }
