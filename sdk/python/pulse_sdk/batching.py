"""Batching, retry timing and response classification for the SDK (pure, no I/O)."""

from __future__ import annotations

import enum
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from pulse_sdk import codec
from pulse_sdk.contract import MAX_REQUEST_BYTES, MAX_REQUEST_EVENTS

_ENVELOPE_HEAD = b'{"events":['
_ENVELOPE_TAIL = b"]}"
_ENVELOPE_BYTES = len(_ENVELOPE_HEAD) + len(_ENVELOPE_TAIL)
#: A Retry-After longer than this is treated as a misconfiguration, not obeyed literally.
MAX_RETRY_AFTER_SECONDS = 600.0


def request_body(events: Sequence[bytes]) -> bytes:
    """The ``{"events": [...]}`` body for already-encoded events."""
    return _ENVELOPE_HEAD + b",".join(events) + _ENVELOPE_TAIL


def body_size(sizes: Sequence[int]) -> int:
    """Size in bytes of the request body holding events of these encoded sizes."""
    return _ENVELOPE_BYTES + sum(sizes) + max(len(sizes) - 1, 0)


def plan_batches(
    sizes: Sequence[int], *, max_events: int = MAX_REQUEST_EVENTS, max_bytes: int = MAX_REQUEST_BYTES
) -> Iterator[range]:
    """Split events (given by encoded size, in order) into consecutive index ranges within both limits.

    An event too large for any request still gets a range of its own; the collector rejects it.
    """
    start, used = 0, _ENVELOPE_BYTES
    for index, size in enumerate(sizes):
        count = index - start
        extra = size + (1 if count else 0)
        if count and (count >= max_events or used + extra > max_bytes):
            yield range(start, index)
            start, used, extra = index, _ENVELOPE_BYTES, size
        used += extra
    if start < len(sizes):
        yield range(start, len(sizes))


def backoff_delay(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Delay before retry ``attempt`` (1-based): exponential, capped, with jitter in [50%, 100%]."""
    ceiling = min(cap, base * 2 ** min(attempt - 1, 62))
    return ceiling * rng.uniform(0.5, 1.0)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = (moment - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def retry_delay(
    attempt: int, retry_after: float | None, *, base: float, cap: float, rng: random.Random
) -> float:
    """The wait before a retry: the backoff, but never shorter than what the server asked for."""
    delay = backoff_delay(attempt, base=base, cap=cap, rng=rng)
    return max(delay, retry_after) if retry_after is not None else delay


class Outcome(enum.Enum):
    ACCEPTED = "accepted"  # handled; events listed in ``rejected`` are invalid and dropped
    TOO_LARGE = "too_large"  # 413: split the batch
    RETRY = "retry"  # 429, 408, 5xx, network error: send the same events again later
    FATAL = "fatal"  # 400, 401, 403, other 4xx: retrying cannot help


@dataclass(frozen=True, slots=True)
class Rejected:
    index: int
    event_id: str | None
    error: str


@dataclass(frozen=True, slots=True)
class Response:
    """What a request's answer means for the events in it."""

    outcome: Outcome
    detail: str = ""
    retry_after: float | None = None
    rejected: tuple[Rejected, ...] = field(default_factory=tuple)


def classify_response(status: int, headers: Mapping[str, str], body: bytes) -> Response:
    """Interpret an HTTP answer of ``POST /v1/events``."""
    if 200 <= status < 300:
        return Response(Outcome.ACCEPTED, f"HTTP {status}", rejected=_rejections(body))
    detail = f"HTTP {status}: {_error_text(body)}"
    if status == 413:
        return Response(Outcome.TOO_LARGE, detail)
    if status in (408, 429) or status >= 500:
        return Response(Outcome.RETRY, detail, retry_after=parse_retry_after(headers.get("retry-after")))
    return Response(Outcome.FATAL, detail)


def _rejections(body: bytes) -> tuple[Rejected, ...]:
    try:
        payload = codec.decode(body)
    except (ValueError, RecursionError):
        return ()
    rejected = payload.get("rejected") if isinstance(payload, dict) else None
    if not isinstance(rejected, list):
        return ()
    out = []
    for item in rejected:
        if isinstance(item, dict) and isinstance(item.get("index"), int):
            event_id = item.get("event_id")
            out.append(
                Rejected(
                    item["index"], event_id if isinstance(event_id, str) else None, str(item.get("error", ""))
                )
            )
    return tuple(out)


def _error_text(body: bytes) -> str:
    try:
        payload: Any = codec.decode(body)
    except (ValueError, RecursionError):
        return body[:200].decode("utf-8", "replace")
    if isinstance(payload, dict) and "detail" in payload:
        return str(payload["detail"])
    return str(payload)[:200]
