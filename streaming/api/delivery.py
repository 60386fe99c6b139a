"""Hand records to Kafka and wait for the broker's acknowledgement (librdkafka delivery reports).

The collector answers 202 only after every record of a request is acknowledged, so nothing
acknowledged to a client can be lost.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, Producer

logger = logging.getLogger(__name__)


class DeliveryFailed(RuntimeError):
    """The broker did not acknowledge a record; the client should retry."""


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    """One record to produce."""

    topic: str
    value: bytes
    key: bytes | None = None
    headers: list[tuple[str, bytes]] | None = None


class _RequestDelivery:
    """Counts down the delivery reports of one request and resolves one future."""

    __slots__ = ("loop", "future", "pending", "error")

    def __init__(self, loop: asyncio.AbstractEventLoop, pending: int) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.pending = pending
        self.error: KafkaError | None = None

    def on_delivery(self, err: KafkaError | None, _msg: Any) -> None:
        # Called on the poll thread.
        if err is not None and self.error is None:
            self.error = err
        self.pending -= 1
        if self.pending == 0:
            self.loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        if self.future.done():
            return
        if self.error is not None:
            self.future.set_exception(DeliveryFailed(f"broker did not acknowledge: {self.error.str()}"))
        else:
            self.future.set_result(None)


class AcknowledgedProducer:
    """A Kafka producer with an awaitable ``send`` that resolves on broker acknowledgement."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._producer = Producer(config)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll_loop, name="kafka-delivery", daemon=True)
        self._thread.start()

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    async def send(self, records: Sequence[OutgoingRecord]) -> None:
        """Produce records and wait until the broker has acknowledged all of them."""
        if not records:
            return
        delivery = _RequestDelivery(asyncio.get_running_loop(), len(records))
        try:
            for record in records:
                self._producer.produce(
                    record.topic,
                    value=record.value,
                    key=record.key,
                    headers=record.headers,
                    on_delivery=delivery.on_delivery,
                )
        except BufferError as exc:
            delivery.future.cancel()  # reports of the records already queued are ignored
            raise DeliveryFailed(f"producer queue is full: {exc}") from None
        await delivery.future

    def broker_reachable(self, timeout: float = 2.0) -> bool:
        """True when the broker answers a metadata request."""
        try:
            self._producer.list_topics(timeout=timeout)
        except Exception:  # noqa: BLE001 - any failure means "not reachable"
            return False
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Flush what is in flight and stop the poll thread."""
        remaining = self._producer.flush(timeout)
        if remaining:
            logger.warning("%d records were not delivered before shutdown", remaining)
        self._stop.set()
        self._thread.join(timeout=2)
