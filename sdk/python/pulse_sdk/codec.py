"""Compact UTF-8 JSON with the standard library, as the collector reads it.

``encode`` writes no spaces and no ``\\u`` escapes for non-ASCII text. Besides JSON's own types it
takes what an application's metadata commonly holds: datetimes (ISO 8601, UTC as ``Z``), dates,
times, UUIDs, decimals (as strings), enums (their value), sets and bytes (base64). NaN and
infinities are refused: JSON has no such numbers.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import json
import uuid
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        text = value.isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, (uuid.UUID, Decimal)):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        return list(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(value).decode("ascii")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_default)


def encode(value: Any) -> bytes:
    """Compact JSON of ``value`` in UTF-8; ``TypeError`` or ``ValueError`` if it is not JSON."""
    return _encoder.encode(value).encode("utf-8")


def decode(raw: bytes | str) -> Any:
    """Parse JSON; ``ValueError`` (or ``RecursionError``, nested too deeply) if it is not JSON."""
    return json.loads(raw)
