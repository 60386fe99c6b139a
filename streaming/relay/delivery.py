"""POST one webhook until it is accepted or the retry policy gives up (I/O)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from core.http_retry import is_retryable
from streaming.relay.outbound import Outbound, request_headers
from streaming.relay.policy import RetryPolicy

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeliveryResult:
    """How a delivery ended: accepted (a 2xx answer), or the reason it will be dead-lettered."""

    decision_id: str
    attempts: int
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.error is None


def deliver_webhook(
    client: httpx.Client,
    outbound: Outbound,
    *,
    secret: str,
    policy: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
) -> DeliveryResult:
    """POST ``outbound`` with a fresh signature per attempt, retrying 429, 5xx and network errors.

    Other 3xx/4xx answers are final. The body of the answer is never read, so a server that
    trickles one cannot hold the relay past the per-attempt timeout.
    """
    why = "no attempt made"
    for attempt in range(1, policy.attempts + 1):
        retry_after = None
        headers = request_headers(outbound, secret, int(clock()), attempt)
        try:
            with client.stream(
                "POST", outbound.url, content=outbound.raw, headers=headers, timeout=policy.timeout
            ) as response:
                status, retry_after = response.status_code, response.headers.get("retry-after")
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:  # final; must not stop the relay
            return DeliveryResult(outbound.decision_id, attempt, f"invalid webhook URL: {exc}")
        except httpx.HTTPError as exc:
            why = f"{type(exc).__name__} from {_host(outbound.url)}"
        else:
            if 200 <= status < 300:
                return DeliveryResult(outbound.decision_id, attempt)
            why = f"HTTP {status} from {_host(outbound.url)}"
            if not is_retryable(status):
                return DeliveryResult(outbound.decision_id, attempt, f"{why} (not retried)")
        logger.debug("webhook %s, attempt %d: %s", outbound.decision_id, attempt, why)
        if attempt < policy.attempts:
            sleep(policy.delay_after(attempt, retry_after))
    return DeliveryResult(outbound.decision_id, policy.attempts, f"{why} after {policy.attempts} attempts")


def _host(url: str) -> str:
    """The URL's host and port only: paths and queries of webhook URLs may carry tokens."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return "an invalid URL"
    return f"{parsed.host}:{parsed.port}" if parsed.port else parsed.host
