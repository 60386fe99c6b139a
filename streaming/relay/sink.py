"""Quix sink of the relay: webhooks delivered (or dead-lettered) before the offsets commit."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, Protocol

from quixstreams.sinks import BaseSink

from core.time_format import now_iso
from streaming.dlq import dlq_headers
from streaming.relay.delivery import DeliveryResult
from streaming.relay.outbound import Outbound

logger = logging.getLogger(__name__)

DLQ_SOURCE = "relay"
DECISION_HEADER = "pulse.decision_id"
ATTEMPTS_HEADER = "pulse.attempts"


class Producer(Protocol):
    """What the sink needs of confluent_kafka's Producer."""

    def produce(self, topic: str, **kwargs: Any) -> None: ...
    def poll(self, timeout: float) -> int: ...
    def flush(self, timeout: float) -> int: ...


class DeadLetterError(RuntimeError):
    """The broker did not acknowledge the relay's dead letters; the checkpoint is not committed."""


class RelaySink(BaseSink):
    """Starts each webhook's delivery as it arrives, on ``pool`` (its threads bound the concurrency).

    ``flush`` (Quix calls it before committing offsets) waits until every webhook taken since
    the last checkpoint was accepted by its receiver or dead-lettered and the broker
    acknowledged the dead letters. A crash before that redelivers the checkpoint's records:
    at least once, with the decision id as the receiver's idempotency key.
    """

    def __init__(
        self,
        deliver: Callable[[Outbound], DeliveryResult],
        producer: Producer,
        dlq_topic: str,
        *,
        pool: Executor,
        broker_timeout_seconds: float = 30.0,
    ) -> None:
        super().__init__()
        self._deliver = deliver
        self._producer = producer
        self._dlq_topic = dlq_topic
        self._pool = pool
        self._broker_timeout = broker_timeout_seconds
        self._in_flight: list[tuple[Outbound, Any, Future[DeliveryResult]]] = []
        self._dead_letters_in_flight = 0
        self._delivery_errors: list[str] = []
        self.delivered = 0
        self.dead_lettered = 0

    def add(
        self,
        value: Outbound,
        key: Any,
        timestamp: int,
        headers: Any,
        topic: str,
        partition: int,
        offset: int,
    ) -> None:
        if value.error is not None:
            self._dead_letter(value, key, value.error, 0)
        else:
            self._in_flight.append((value, key, self._pool.submit(self._deliver, value)))

    def flush(self) -> None:
        in_flight, self._in_flight = self._in_flight, []
        for outbound, key, future in in_flight:
            result = future.result()  # bounded: attempts x timeout + backoff (RetryPolicy)
            if result.delivered:
                self.delivered += 1
            else:
                logger.warning("webhook %s dead-lettered: %s", result.decision_id, result.error)
                self._dead_letter(outbound, key, result.error or "undelivered", result.attempts)
        self._confirm_dead_letters()

    def on_paused(self) -> None:
        """Quix will redeliver what this checkpoint took: let running deliveries end, keep no results."""
        for _, _, future in self._in_flight:
            future.cancel()
        self._in_flight = []

    def _dead_letter(self, outbound: Outbound, key: Any, reason: str, attempts: int) -> None:
        headers = [
            *dlq_headers(reason, DLQ_SOURCE, now_iso()),
            (DECISION_HEADER, outbound.decision_id.encode()),
            (ATTEMPTS_HEADER, str(attempts).encode()),
        ]
        self._producer.produce(
            self._dlq_topic, value=outbound.raw, key=key, headers=headers, on_delivery=self._on_delivery
        )
        self._producer.poll(0)
        self._dead_letters_in_flight += 1

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self._delivery_errors.append(str(err))

    def _confirm_dead_letters(self) -> None:
        if not self._dead_letters_in_flight:
            return
        remaining = self._producer.flush(self._broker_timeout)
        errors, self._delivery_errors = self._delivery_errors, []
        count, self._dead_letters_in_flight = self._dead_letters_in_flight, 0
        if remaining or errors:
            raise DeadLetterError(
                f"the broker did not acknowledge {remaining or len(errors)} dead letter(s) of "
                f"{self._dlq_topic}: {errors[:1]}; the checkpoint will be redelivered"
            )
        self.dead_lettered += count
