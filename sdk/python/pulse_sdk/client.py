"""PulseClient: queue server-side events and deliver them to ``POST /v1/events`` from a thread.

Delivery is at-least-once: an event keeps the ``event_id`` it got at enqueue time through every
retry and spool round trip, and the collector counts each ``event_id`` once.
"""

from __future__ import annotations

import atexit
import logging
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from pulse_sdk import codec
from pulse_sdk._version import __version__
from pulse_sdk.batching import (
    Outcome,
    Response,
    classify_response,
    plan_batches,
    request_body,
    retry_delay,
)
from pulse_sdk.contract import MAX_REQUEST_BYTES, MAX_REQUEST_EVENTS
from pulse_sdk.errors import ClientClosed
from pulse_sdk.events import build_event, encode_event
from pulse_sdk.spool import Spool

logger = logging.getLogger(__name__)

_DROP_WARNING_INTERVAL = 10.0  # seconds between "queue full" warnings


@dataclass(frozen=True)
class DeliveryStats:
    """Counters since the client started (events unless said otherwise)."""

    enqueued: int = 0
    delivered: int = 0  # accepted by the collector (202, not in ``rejected``)
    rejected: int = 0  # invalid per the collector; logged and dropped
    dropped: int = 0  # lost: queue overflow without a spool, 400/401/403, retries exhausted without a spool
    spooled: int = 0  # written to the disk spool
    requests: int = 0  # HTTP requests answered (any status)
    retries: int = 0  # failed attempts that were retried or given up (requests or network errors)
    last_error: str | None = None


@dataclass(slots=True)
class _Pending:
    event_id: str
    raw: bytes
    enqueued_at: float = 0.0


@dataclass
class _Work:
    events: list[_Pending] = field(default_factory=list)
    segment: Path | None = None


class PulseClient:
    """Send events to a Pulse collector in batches from a background thread.

    ``track``/``page``/``identify`` validate the event against the contract (``ValueError`` if
    invalid), give it a UUID4 ``event_id`` unless one is passed, queue it and return the id.
    When the queue holds ``max_queue`` events, a call waits up to ``max_block`` seconds for room,
    then moves the oldest ``batch_size`` events to the spool (with ``spool_dir``) or drops the
    oldest event with a warning (without).
    """

    def __init__(
        self,
        host: str,
        write_key: str,
        *,
        batch_size: int = 100,
        flush_interval: float = 0.5,
        max_queue: int = 10_000,
        max_block: float = 0.1,
        spool_dir: str | Path | None = None,
        max_retries: int | None = None,
        backoff_base: float = 0.2,
        max_backoff: float = 30.0,
        timeout: float = 10.0,
        shutdown_timeout: float = 5.0,
        transport: httpx.BaseTransport | None = None,
        register_atexit: bool = True,
    ) -> None:
        if not 1 <= batch_size <= MAX_REQUEST_EVENTS:
            raise ValueError(f"batch_size must be between 1 and {MAX_REQUEST_EVENTS}, got {batch_size}")
        if max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {max_queue}")
        if flush_interval <= 0 or backoff_base <= 0 or max_backoff < backoff_base:
            raise ValueError(
                "flush_interval and backoff_base must be positive and max_backoff >= backoff_base"
            )
        if max_retries is not None and max_retries < 0:
            raise ValueError(f"max_retries must be None (retry until close) or >= 0, got {max_retries}")
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_queue = max_queue
        self.max_block = max_block
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.shutdown_timeout = shutdown_timeout

        base_url = host if "://" in host else f"http://{host}"
        self._http = httpx.Client(
            base_url=base_url,
            headers={
                "X-Pulse-Key": write_key,
                "Content-Type": "application/json",
                "User-Agent": f"pulse-python-sdk/{__version__}",
            },
            timeout=timeout,
            transport=transport,
        )
        self._spool = Spool(spool_dir) if spool_dir is not None else None
        self._cond = threading.Condition()  # guards everything below
        self._queue: deque[_Pending] = deque()
        self._outstanding = 0  # queued + in flight from the queue
        self._flush_waiters = 0
        self._closed = False
        self._stop = threading.Event()
        self._spool_dirty = bool(self._spool and self._spool.segments())
        self._spool_retry_at = 0.0
        self._prefer_spool = True
        self._stats = DeliveryStats()
        self._dropped_since_warning = 0
        self._last_drop_warning = float("-inf")
        self._rng = random.Random()
        if self._spool_dirty:
            assert self._spool is not None
            logger.info(
                "resending %d spooled segment(s) from %s", len(self._spool.segments()), self._spool.directory
            )

        self._worker = threading.Thread(target=self._run, name="pulse-sdk-sender", daemon=True)
        self._worker.start()
        self._atexit = register_atexit
        if register_atexit:
            atexit.register(self.close)

    # -- public API -------------------------------------------------------------------------

    def track(
        self,
        event_type: str,
        *,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        timestamp: datetime | str | None = None,
        event_id: str | uuid.UUID | None = None,
        consent: Mapping[str, bool] | None = None,
    ) -> str:
        """Queue one event; return its ``event_id``. Pass ``event_id`` to make a resend count once.

        ``consent`` is the person's consent per purpose, e.g. ``{"personalization": False}``
        (docs/events.md, "Consent")."""
        event = build_event(
            event_type,
            user_id=user_id,
            anonymous_id=anonymous_id,
            metadata=metadata,
            timestamp=timestamp,
            event_id=event_id,
            consent=consent,
        )
        self._enqueue(_Pending(event["event_id"], encode_event(event)))
        return event["event_id"]

    def page(
        self,
        *,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        url: str | None = None,
        category: str | None = None,
        product_id: str | None = None,
        referrer: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        timestamp: datetime | str | None = None,
        event_id: str | uuid.UUID | None = None,
    ) -> str:
        """Queue a ``page_view``; the named fields go into ``metadata``."""
        named = {"url": url, "category": category, "product_id": product_id, "referrer": referrer}
        merged = {**(metadata or {}), **{k: v for k, v in named.items() if v is not None}}
        return self.track(
            "page_view",
            user_id=user_id,
            anonymous_id=anonymous_id,
            metadata=merged,
            timestamp=timestamp,
            event_id=event_id,
        )

    def identify(
        self,
        user_id: str,
        anonymous_id: str | None = None,
        traits: Mapping[str, Any] | None = None,
        *,
        timestamp: datetime | str | None = None,
        event_id: str | uuid.UUID | None = None,
    ) -> str:
        """Queue an ``identify`` of ``user_id`` (linking ``anonymous_id`` when given); ``traits`` go into
        ``metadata.traits``."""
        return self.track(
            "identify",
            user_id=user_id,
            anonymous_id=anonymous_id,
            metadata={"traits": dict(traits)} if traits else None,
            timestamp=timestamp,
            event_id=event_id,
        )

    def flush(self, timeout: float | None = None) -> bool:
        """Send what is queued (and spooled) now; True once all of it is resolved, False on timeout.

        Resolved means accepted, rejected as invalid, dropped, or (after ``max_retries``) spooled.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if not self._worker.is_alive():
                return self._idle()
            self._flush_waiters += 1
            self._cond.notify_all()
            try:
                while not self._idle():
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._cond.wait(remaining)
                return True
            finally:
                self._flush_waiters -= 1

    def close(self) -> None:
        """Flush for up to ``shutdown_timeout`` seconds, then spool (or drop, logged) the rest and stop."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
        if self._atexit:
            atexit.unregister(self.close)
        if not self.flush(self.shutdown_timeout):
            logger.warning("close: not everything was delivered within %.1fs", self.shutdown_timeout)
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._worker.join(self.timeout + 5)
        with self._cond:
            leftovers = list(self._queue)
            self._queue.clear()
            self._outstanding -= len(leftovers)
            self._park(leftovers, "the client closed before they were delivered")
        if self._worker.is_alive():
            logger.warning(
                "the sender thread is still in a request; its events are lost if the process exits now"
            )
            return
        self._http.close()
        if self._spool is not None:
            self._spool.close()

    @property
    def stats(self) -> DeliveryStats:
        """A snapshot of the delivery counters."""
        with self._cond:
            return self._stats

    @property
    def queued(self) -> int:
        """Events in memory not yet resolved (queued or in flight)."""
        with self._cond:
            return self._outstanding

    def __enter__(self) -> PulseClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- enqueueing (caller's thread) -------------------------------------------------------

    def _enqueue(self, pending: _Pending) -> None:
        with self._cond:
            if self._closed:
                raise ClientClosed("this PulseClient is closed; create a new one to send events")
            if len(self._queue) >= self.max_queue:
                self._make_room()
            pending.enqueued_at = time.monotonic()
            self._queue.append(pending)
            self._outstanding += 1
            self._count(enqueued=1)
            if len(self._queue) == 1 or len(self._queue) >= self.batch_size:
                self._cond.notify_all()

    def _make_room(self) -> None:
        deadline = time.monotonic() + self.max_block
        while len(self._queue) >= self.max_queue and not self._closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._cond.wait(remaining)
        if self._closed:
            raise ClientClosed("this PulseClient is closed; create a new one to send events")
        if len(self._queue) < self.max_queue:
            return
        if self._spool is not None:
            oldest = [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]
            self._outstanding -= len(oldest)
            self._park(oldest, f"the in-memory queue is full ({self.max_queue} events)")
            return
        self._queue.popleft()
        self._outstanding -= 1
        self._count(dropped=1)
        self._dropped_since_warning += 1
        now = time.monotonic()
        if now - self._last_drop_warning >= _DROP_WARNING_INTERVAL:
            logger.warning(
                "queue full (%d events): dropped %d oldest event(s); the collector is slow or down "
                "(raise max_queue or set spool_dir to keep them)",
                self.max_queue,
                self._dropped_since_warning,
            )
            self._last_drop_warning, self._dropped_since_warning = now, 0

    # -- delivery (sender thread) -----------------------------------------------------------

    def _run(self) -> None:
        while True:
            work = self._next_work()
            if work is None:
                return
            try:
                self._process(work)
            except Exception:  # the sender must outlive any bug; the events are kept, not lost
                logger.exception("unexpected error while sending events")
                with self._cond:
                    if work.segment is None:
                        self._park(work.events, "unexpected error")
                        self._outstanding -= len(work.events)
                    self._spool_retry_at = time.monotonic() + self.max_backoff
                    self._cond.notify_all()

    def _next_work(self) -> _Work | None:
        with self._cond:
            while True:
                if self._stop.is_set():
                    return None
                now = time.monotonic()
                queue_due = bool(self._queue) and (
                    len(self._queue) >= self.batch_size
                    or self._flush_waiters > 0
                    or now - self._queue[0].enqueued_at >= self.flush_interval
                )
                spool_due = self._spool is not None and self._spool_dirty and now >= self._spool_retry_at
                if spool_due and (self._prefer_spool or not queue_due):
                    assert self._spool is not None
                    segments = self._spool.segments()
                    if segments:
                        self._prefer_spool = False
                        return _Work(segment=segments[0])
                    self._spool_dirty = False
                    self._cond.notify_all()
                    continue
                if queue_due:
                    self._prefer_spool = True
                    count = min(self.batch_size, len(self._queue))
                    events = [self._queue.popleft() for _ in range(count)]
                    self._cond.notify_all()  # room for callers waiting in _make_room
                    return _Work(events=events)
                waits = []
                if self._queue:
                    waits.append(self._queue[0].enqueued_at + self.flush_interval - now)
                if self._spool_dirty:
                    waits.append(self._spool_retry_at - now)
                self._cond.wait(max(min(waits), 0.001) if waits else None)

    def _process(self, work: _Work) -> None:
        if work.segment is None:
            undelivered = self._deliver(work.events, max_events=self.batch_size)
            with self._cond:
                self._park(undelivered, self._stats.last_error or "not delivered")
                self._outstanding -= len(work.events)
                self._cond.notify_all()
            return
        assert self._spool is not None
        events = [_Pending(_event_id_of(raw), raw) for raw in self._spool.read(work.segment)]
        undelivered = self._deliver(events, max_events=MAX_REQUEST_EVENTS)
        with self._cond:
            if len(undelivered) < len(events) or not events:
                if undelivered:
                    self._spool.write([e.raw for e in undelivered])
                self._spool.remove(work.segment)
                logger.info(
                    "resent %d spooled events from %s", len(events) - len(undelivered), work.segment.name
                )
            if undelivered:
                self._spool_retry_at = time.monotonic() + self.max_backoff
            self._cond.notify_all()

    def _deliver(self, events: list[_Pending], *, max_events: int) -> list[_Pending]:
        """Send events in requests within the collector's limits; return those still undelivered."""
        undelivered: list[_Pending] = []
        sizes = [len(e.raw) for e in events]
        for span in plan_batches(sizes, max_events=max_events, max_bytes=MAX_REQUEST_BYTES):
            chunk = events[span.start : span.stop]
            if undelivered or self._stop.is_set():
                undelivered.extend(chunk)
            else:
                undelivered.extend(self._send(chunk))
        return undelivered

    def _send(self, chunk: list[_Pending]) -> list[_Pending]:
        """One batch until it is resolved; return the events left undelivered (stop or retries exhausted)."""
        attempt = 0
        while True:
            answer = self._post(chunk)
            if answer.outcome is Outcome.ACCEPTED:
                self._settle(chunk, answer)
                return []
            if answer.outcome is Outcome.TOO_LARGE:
                if len(chunk) == 1:
                    logger.error(
                        "collector refused event %s as too large (%s); dropped",
                        chunk[0].event_id,
                        answer.detail,
                    )
                    self._count(dropped=1)
                    return []
                middle = len(chunk) // 2
                logger.warning("%s; splitting %d events into two requests", answer.detail, len(chunk))
                first = self._send(chunk[:middle])
                return first + chunk[middle:] if first else self._send(chunk[middle:])
            if answer.outcome is Outcome.FATAL:
                logger.error(
                    "collector refused %d events (%s); dropped: retrying cannot help",
                    len(chunk),
                    answer.detail,
                )
                self._count(dropped=len(chunk))
                return []
            attempt += 1
            self._count(retries=1)
            if self.max_retries is not None and attempt > self.max_retries:
                logger.error(
                    "giving up on %d events after %d attempts: %s", len(chunk), attempt, answer.detail
                )
                return chunk
            delay = retry_delay(
                attempt, answer.retry_after, base=self.backoff_base, cap=self.max_backoff, rng=self._rng
            )
            logger.warning(
                "%s; retrying %d events in %.2fs (attempt %d)", answer.detail, len(chunk), delay, attempt
            )
            if self._stop.wait(delay):
                return chunk

    def _post(self, chunk: list[_Pending]) -> Response:
        body = request_body([e.raw for e in chunk])
        try:
            response = self._http.post("/v1/events", content=body)
        except httpx.HTTPError as exc:
            answer = Response(Outcome.RETRY, f"{type(exc).__name__}: {exc or 'no detail'}")
        else:
            answer = classify_response(response.status_code, response.headers, response.content)
            self._count(requests=1)
        if answer.outcome is not Outcome.ACCEPTED:
            with self._cond:
                self._stats = replace(self._stats, last_error=answer.detail)
        return answer

    def _settle(self, chunk: list[_Pending], answer: Response) -> None:
        for rejection in answer.rejected:
            event_id = rejection.event_id
            if event_id is None and 0 <= rejection.index < len(chunk):
                event_id = chunk[rejection.index].event_id
            logger.warning(
                "collector rejected event %s: %s (dropped; resending cannot fix it)",
                event_id,
                rejection.error,
            )
        rejected = len(answer.rejected)
        self._count(delivered=len(chunk) - rejected, rejected=rejected)
        with self._cond:
            self._spool_retry_at = 0.0  # the collector answers again: resend the spool soon

    # -- helpers (callers hold or take the lock) --------------------------------------------

    def _park(self, events: list[_Pending], reason: str) -> None:
        """Keep undelivered events in the spool, or drop them with an error when there is none."""
        if not events:
            return
        with self._cond:
            if self._spool is not None:
                try:
                    path = self._spool.write([e.raw for e in events])
                except OSError as exc:
                    logger.error("could not write the spool (%s)", exc)
                else:
                    self._spool_dirty = True
                    self._count(spooled=len(events))
                    logger.warning("spooled %d events to %s (%s)", len(events), path, reason)
                    return
            self._count(dropped=len(events))
            logger.error(
                "dropped %d undelivered events (%s)%s",
                len(events),
                reason,
                "" if self._spool is not None else "; set spool_dir to keep them across restarts",
            )

    def _idle(self) -> bool:
        return self._outstanding == 0 and not (self._spool is not None and self._spool_dirty)

    def _count(self, **increments: int) -> None:
        with self._cond:
            s = self._stats
            self._stats = replace(s, **{name: getattr(s, name) + n for name, n in increments.items()})


def _event_id_of(raw: bytes) -> str:
    try:
        value = codec.decode(raw).get("event_id")
    except (ValueError, RecursionError, AttributeError):
        return "?"
    return value if isinstance(value, str) else "?"
