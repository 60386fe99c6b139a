"""Hand records to Kafka and wait for the broker's acknowledgement (librdkafka delivery reports).

The collector answers 202 only after every record of a request is acknowledged, so nothing
acknowledged to a client can be lost.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, Producer

from core.broker_hold import BrokerHold
from streaming.api.metrics import REQUESTS_HELD
from streaming.next_producer import NextProducer

logger = logging.getLogger(__name__)


#: Delivery errors after which the producer is replaced rather than reused.
_REPLACE_ON = frozenset(
    {
        KafkaError._FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError.PRODUCER_FENCED,
        KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
    }
)


#: How often a request held during a broker maintenance looks whether intake is released.
HOLD_POLL_SECONDS = 0.005


class DeliveryFailed(RuntimeError):
    """The broker did not acknowledge a record; the client should retry."""


class BrokerMaintenance(DeliveryFailed):
    """`pulse up` is maintaining the embedded broker; the client should retry in a moment."""


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    """One record to produce."""

    topic: str
    value: bytes
    key: bytes | None = None
    headers: list[tuple[str, bytes]] | None = None


class _RequestDelivery:
    """Counts down the delivery reports of one request and resolves one future."""

    __slots__ = ("loop", "future", "pending", "error", "on_error")

    def __init__(self, loop: asyncio.AbstractEventLoop, pending: int, on_error: Any = None) -> None:
        self.on_error = on_error
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.pending = pending
        self.error: KafkaError | None = None

    def on_delivery(self, err: KafkaError | None, _msg: Any) -> None:
        # Called on the poll thread.
        if err is not None and self.error is None:
            self.error = err
        if err is not None and self.on_error is not None:
            self.on_error(err)
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


def _retire(producer: Producer) -> None:
    """Fail what the old producer still holds, so every waiting request gets its 503 now."""
    producer.purge(in_queue=True, in_flight=True)
    producer.flush(5)  # serves the purged records' delivery reports (errors)


class AcknowledgedProducer:
    """A Kafka producer with an awaitable ``send`` that resolves on broker acknowledgement."""

    def __init__(
        self,
        config: dict[str, Any],
        hold: BrokerHold | None = None,
        max_batches: int = 2000,
        hold_wait_seconds: float = 5.0,
    ) -> None:
        self._config = {**config, "error_cb": self._on_client_error}
        self._producer = Producer(self._config)
        self._replace = False  # set when the producer can no longer deliver (fenced, fatal)
        # Embedded-broker maintenance (core.broker_hold): ``_held`` stops ``send``, the lock makes
        # "not held, so produce" atomic against the poll thread setting it.
        self._hold, self._max_batches, self._hold_wait = hold, max_batches, hold_wait_seconds
        self._held: int | None = None
        self._sent_batches = 0
        # The producer intake uses after a maintenance's release, made while intake is held.
        self._next: NextProducer | None = None
        self._next_for: int | None = None
        self._next_reported = False
        self._gate = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll_loop, name="kafka-delivery", daemon=True)
        self._thread.start()

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            # A hold and a release are seen soon once a maintenance is coming.
            self._producer.poll(0.01 if self._held is not None or self._next is not None else 0.05)
            if self._hold is not None:
                self._follow_hold(self._hold)

    def _follow_hold(self, hold: BrokerHold) -> None:
        """Stop producing while `pulse up` maintains the broker; go on with a new producer after."""
        generation = hold.held_generation()
        if generation is not None and self._held != generation:
            with self._gate:
                self._held = generation
            remaining = self._producer.flush(30)  # every request in flight gets its answer
            if remaining:
                logger.warning(
                    "%d records unacknowledged at broker maintenance; their requests get 503", remaining
                )
            hold.acknowledge(generation)
            logger.info("holding intake for broker maintenance %d", generation)
        elif generation is None and self._held is not None:
            with self._gate:
                # The restarted broker knows no producer id: intake goes on with the producer made
                # for it (holding its id already), else a fresh one.
                replacement = self._next.take() if self._next is not None else None
                self._new_producer(reason="broker maintenance", replacement=replacement)
                self._held, self._sent_batches = None, 0
                self._next = None
            logger.info("intake resumed after broker maintenance")
        elif generation is None and self._sent_batches >= self._max_batches and not hold.requested():
            hold.request()
        self._prepare_next_producer(hold, generation)

    def _prepare_next_producer(self, hold: BrokerHold, held: int | None) -> None:
        """While a maintenance is prepared or held: make the producer intake will use after the
        release (``streaming.next_producer``: candidates once intake is held), and say so
        once it holds an id of the new broker (`pulse up` waits for that before it releases intake)."""
        coming = held if held is not None else hold.coming_generation()
        if coming is None:
            if self._next is not None:  # the maintenance gave up before the hold
                self._next.take()
                self._next = None
            return
        if self._next is None or self._next_for != coming:
            self._next, self._next_for, self._next_reported = NextProducer(self._config), coming, False
        if self._next_reported:
            return
        if self._next.step(hold.down_since(coming), held=held is not None) is not None and held is not None:
            hold.ready(coming)
            self._next_reported = True

    async def send(self, records: Sequence[OutgoingRecord]) -> None:
        """Produce records and wait until the broker has acknowledged all of them."""
        if not records:
            return
        if self._replace:
            self._new_producer()
        delivery = _RequestDelivery(asyncio.get_running_loop(), len(records), self._on_delivery_error)
        deadline = time.monotonic() + self._hold_wait
        while True:
            if self._held is not None:
                await self._wait_for_release(delivery, deadline)
            with self._gate:
                if self._held is None:
                    self._produce(records, delivery)
                    break
            # held between the look and the gate: wait for the release as well
        await delivery.future

    def _produce(self, records: Sequence[OutgoingRecord], delivery: _RequestDelivery) -> None:
        """Hand ``records`` to the producer (the caller holds the gate and intake is not held)."""
        self._sent_batches += 1
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

    async def _wait_for_release(self, delivery: _RequestDelivery, deadline: float) -> None:
        """Hold the request in place while the broker is maintained, until ``deadline`` at most
        (``hold_wait_seconds`` after it came): answered after the release, the client does not
        wait out a 503's ``Retry-After``."""
        REQUESTS_HELD.inc()
        try:
            while self._held is not None and time.monotonic() < deadline:
                await asyncio.sleep(HOLD_POLL_SECONDS)
        finally:
            REQUESTS_HELD.dec()
        if self._held is not None:
            delivery.future.cancel()
            raise BrokerMaintenance(
                f"the broker is still being maintained after {self._hold_wait:g}s, retry in a moment"
            )

    def _on_delivery_error(self, err: KafkaError) -> None:
        # After a broker stall the idempotent producer can end up fenced for good (seen with
        # Tansu 0.6.0): every later request would get 503. A new producer starts clean.
        if err.fatal() or err.code() in _REPLACE_ON or "fenc" in err.str().lower():
            self._replace = True

    def _on_client_error(self, err: KafkaError) -> None:
        if err.fatal():
            logger.error("Kafka producer failed for good (%s); a new one will be created", err.str())
            self._replace = True

    def _new_producer(
        self, reason: str = "a fatal or fencing error", replacement: Producer | None = None
    ) -> None:
        old, self._producer = self._producer, replacement or Producer(self._config)
        self._replace = False
        logger.warning("replaced the Kafka producer after %s; unacknowledged requests got 503", reason)
        threading.Thread(target=_retire, args=(old,), name="kafka-old-producer", daemon=True).start()

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
