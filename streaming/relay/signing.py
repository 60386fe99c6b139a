"""Webhook signatures (pure): ``Pulse-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>``.

The signed payload is ``f"{t}.".encode() + body``, as Stripe and Svix do: the timestamp is inside
the MAC, so a receiver that rejects old timestamps also rejects replays of captured requests.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "Pulse-Signature"
#: Default age (seconds) beyond which a receiver should refuse a signed request.
DEFAULT_TOLERANCE_SECONDS = 300


class SignatureError(ValueError):
    """A webhook signature is missing, malformed, stale or does not match the body."""


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``<timestamp>.<body>`` under ``secret``."""
    payload = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    """The value of the ``Pulse-Signature`` header for ``body`` sent at ``timestamp``."""
    return f"t={timestamp},v1={signature(secret, timestamp, body)}"


def verify(
    secret: str, header: str | None, body: bytes, now: float, tolerance: float = DEFAULT_TOLERANCE_SECONDS
) -> int:
    """Check a ``Pulse-Signature`` header against ``body``; return its timestamp or raise SignatureError."""
    if not header:
        raise SignatureError("no Pulse-Signature header")
    fields = [part.split("=", 1) for part in header.split(",")]
    timestamps = [value for name, value in (f for f in fields if len(f) == 2) if name.strip() == "t"]
    candidates = [value for name, value in (f for f in fields if len(f) == 2) if name.strip() == "v1"]
    if len(timestamps) != 1 or not timestamps[0].isdigit() or not candidates:
        raise SignatureError(f"malformed Pulse-Signature header: expected t=<unix>,v1=<hex>, got {header!r}")
    timestamp = int(timestamps[0])
    if abs(now - timestamp) > tolerance:
        raise SignatureError(f"signature timestamp {timestamp} is more than {tolerance:.0f}s from now")
    expected = signature(secret, timestamp, body)
    if not any(hmac.compare_digest(expected, candidate.strip()) for candidate in candidates):
        raise SignatureError("signature does not match the body (wrong secret, or the body was changed)")
    return timestamp
