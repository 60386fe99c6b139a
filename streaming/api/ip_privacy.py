"""PULSE_IP_ANONYMIZATION: what the collector does to an event's IP address before it reaches Kafka (pure).

``truncate`` keeps the network (IPv4 /24, IPv6 /48), which is what country and city lookups
use; ``hash`` replaces the address by a keyed hash (HMAC-SHA256 with PULSE_IP_HASH_KEY; a plain
hash of an IPv4 address is reversed by trying all 2^32 of them), so the same address still
matches itself but geo lookups find nothing; ``none`` keeps it as sent. Under truncate and
hash, a value that is not an IP address is removed: it cannot be anonymized, and may be PII.
"""

from __future__ import annotations

import hashlib
import hmac
import socket
from typing import Any, Literal

from core.ip_address import packed_ip
from core.settings import PulseSettings

Mode = Literal["none", "truncate", "hash"]
HASH_PREFIX = "iphash:"


class IPHashKeyMissing(ValueError):
    """Start-up error: PULSE_IP_ANONYMIZATION=hash needs PULSE_IP_HASH_KEY."""


def truncate_ip(value: str) -> str | None:
    """The /24 (IPv4) or /48 (IPv6) network address of ``value``; None when it is not an IP address."""
    packed = packed_ip(value)
    if packed is None:
        return None
    if len(packed) == 4:
        return socket.inet_ntop(socket.AF_INET, packed[:3] + b"\x00")
    return socket.inet_ntop(socket.AF_INET6, packed[:6] + b"\x00" * 10)


def hash_ip(value: str, key: bytes) -> str | None:
    """``iphash:<32 hex>``: HMAC-SHA256 of the address's canonical bytes; None for a non-IP value."""
    packed = packed_ip(value)
    if packed is None:
        return None
    return HASH_PREFIX + hmac.new(key, packed, hashlib.sha256).hexdigest()[:32]


class IPAnonymizer:
    """Applies the mode to an event's ``metadata.ip`` and to a DLQ-bound Segment message's ``context.ip``."""

    def __init__(self, mode: Mode, hash_key: bytes | None = None) -> None:
        if mode == "hash" and not hash_key:
            raise IPHashKeyMissing(
                "PULSE_IP_ANONYMIZATION=hash needs PULSE_IP_HASH_KEY (a long random secret)"
            )
        self.mode = mode
        self._key = hash_key or b""

    @classmethod
    def from_settings(cls, settings: PulseSettings) -> IPAnonymizer:
        key = settings.ip_hash_key.get_secret_value().encode() if settings.ip_hash_key else None
        return cls(settings.ip_anonymization, key)

    def address(self, value: Any) -> str | None:
        """The stored form of an address (None: remove it)."""
        if self.mode == "none":
            return value
        if not isinstance(value, str):
            return None
        return truncate_ip(value) if self.mode == "truncate" else hash_ip(value, self._key)

    def scrub(self, obj: Any) -> Any:
        """``obj`` with its IP anonymized: a new dict when something changed, else ``obj`` itself."""
        if self.mode == "none" or not isinstance(obj, dict):
            return obj
        for field in ("metadata", "context"):
            inner = obj.get(field)
            if isinstance(inner, dict) and "ip" in inner:
                inner = dict(inner)
                anonymized = self.address(inner.pop("ip"))
                if anonymized is not None:
                    inner["ip"] = anonymized
                obj = {**obj, field: inner}
        return obj
