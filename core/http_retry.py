"""The one retry loop for Pulse's own HTTP calls: retry 429, 5xx and connection errors with backoff."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import httpx

logger = logging.getLogger(__name__)


def is_retryable(status: int) -> bool:
    """429 (slow down) and 5xx (try again) are worth another attempt; other answers are final."""
    return status == 429 or status >= 500


def backoff_delay(attempt: int, first: float, cap: float, retry_after: str | None = None) -> float:
    """Seconds to wait after failed attempt ``attempt`` (0-based): doubling from ``first``, at most ``cap``.

    A ``Retry-After`` of some seconds, when the server sent one, is honoured up to ``cap``.
    """
    delay = min(cap, first * 2**attempt)
    if retry_after is not None:
        try:
            delay = max(delay, min(cap, float(retry_after)))
        except ValueError:
            pass  # an HTTP date: keep the backoff
    return delay


def post_with_retry(
    client: httpx.Client,
    url: str,
    *,
    attempts: int,
    first_delay: float,
    max_delay: float,
    sleep: Callable[[float], None] = time.sleep,
    **request: Any,
) -> httpx.Response | None:
    """POST until an answer that is not retryable, at most ``attempts`` times.

    Returns the last answer (which may still be retryable when every attempt was refused), or
    None when no attempt got one. Only for requests that are safe to repeat (an idempotency key,
    event ids that dedupe).
    """
    response: httpx.Response | None = None
    for attempt in range(attempts):
        try:
            response = client.post(url, **request)
        except httpx.TransportError as exc:
            logger.debug("POST %s, attempt %d: %s", url, attempt + 1, exc)
        else:
            if not is_retryable(response.status_code):
                return response
        if attempt + 1 < attempts:
            retry_after = response.headers.get("retry-after") if response is not None else None
            sleep(backoff_delay(attempt, first_delay, max_delay, retry_after))
    return response
