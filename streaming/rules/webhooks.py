"""Deliver webhook decisions from a background thread (best effort; pulse.triggers is the durable record)."""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

import httpx

from core.http_retry import is_retryable, post_with_retry

logger = logging.getLogger(__name__)


class WebhookDispatcher:
    """POSTs each webhook decision as JSON, retrying with backoff; never blocks the stream."""

    def __init__(self, *, max_queue: int = 10_000, attempts: int = 4, timeout_seconds: float = 5.0) -> None:
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(max_queue)
        self._attempts = attempts
        self._timeout = timeout_seconds
        self._thread: threading.Thread | None = None
        self.delivered = 0
        self.failed = 0
        self.dropped = 0

    def submit(self, decision: dict[str, Any]) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="pulse-webhooks", daemon=True)
            self._thread.start()
        try:
            self._queue.put_nowait(decision)
        except queue.Full:
            self.dropped += 1
            logger.warning(
                "webhook queue full: decision %s not posted (it is on the triggers topic)",
                decision["decision_id"],
            )

    def _run(self) -> None:
        with httpx.Client(timeout=self._timeout) as client:
            while True:
                decision = self._queue.get()
                self._post(client, decision)

    def _post(self, client: httpx.Client, decision: dict[str, Any]) -> None:
        response = post_with_retry(
            client,
            decision["url"],
            attempts=self._attempts,
            first_delay=0.5,
            max_delay=10,
            json=decision,
            headers={"Idempotency-Key": decision["decision_id"]},
        )
        if response is not None and response.is_success:
            self.delivered += 1
            return
        self.failed += 1
        if response is not None and not is_retryable(response.status_code):
            logger.warning("webhook for rule %r answered %s", decision["rule"], response.status_code)
        else:
            logger.warning("webhook for rule %r failed after %d attempts", decision["rule"], self._attempts)
