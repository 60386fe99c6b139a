"""A consumer app's side of `pulse up`'s embedded-broker maintenance (core.broker_hold).

While a maintenance is prepared or intake is held, the app checkpoints at once: maintenance waits
until every record is committed, and the archiver would otherwise make it wait for its 5-second
checkpoint. When the broker is about to be restarted, the app stops its Quix application (closing
its Kafka clients: librdkafka clients whose broker is replaced under them were seen to crash or
stall), says so, builds a new application as soon as the new broker is up (while `pulse up` still
restores offsets and commits) and runs it once the hold is released: no new process, so no
start-up cost. It logs how long each step took (close, rebuild, assignment, first record).
Apps under `pulse up` read their partitions without a group join (streaming/static_assignment.py):
one instance of each runs there, and Tansu's first JoinGroup takes a second or more.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Producer
from quixstreams import Application

from core.broker_hold import BrokerHold
from core.settings import PulseSettings
from streaming.app_runner import collect_replaced
from streaming.next_producer import NextProducer
from streaming.static_assignment import assign_statically

logger = logging.getLogger(__name__)

WATCH_SECONDS = 0.02
#: While a maintenance is prepared or held: every step of it waits for the apps to see the next one.
WATCH_SECONDS_MAINTAINED = 0.005
#: How long a rebuild waits for a producer made during the hold to hold an id of the new broker.
NEXT_PRODUCER_WAIT_SECONDS = 1.0
#: How long a stopped app waits for the release before exiting (its supervisor restarts it).
RELEASE_TIMEOUT_SECONDS = 300.0


class BrokerHoldFollower:
    """Follows the hold for one consumer app; inert without ``PULSE_BROKER_HOLD_DIR``."""

    def __init__(self, hold: BrokerHold | None) -> None:
        self._hold = hold
        self._app: Application | None = None
        self._app_lock = threading.Lock()  # the watcher's use of ``_app`` against its release
        self._stopped_for: int | None = None
        self._handled: int | None = None
        self._watcher: threading.Thread | None = None
        self._released: tuple[int, float] | None = None  # (generation, when) until the rebuild
        self._stop_asked = 0.0
        # The app's own producer (``producer``), made again during each hold (``_step_next_producer``).
        self._producer_config: dict[str, Any] | None = None
        self._next: NextProducer | None = None
        self._next_for: int | None = None
        self._next_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: PulseSettings) -> BrokerHoldFollower:
        return cls(BrokerHold(settings.broker_hold_dir) if settings.broker_hold_dir else None)

    def wrap(self, build: Callable[[], Application]) -> Callable[[], Application]:
        """``build``, with the application it returns followed."""
        if self._hold is None:
            return build

        def build_and_follow() -> Application:
            started = time.monotonic()
            app = assign_statically(build())
            if self._released is not None:
                generation = self._released[0]
                logger.info(
                    "maintenance %d: application built in %.3fs", generation, time.monotonic() - started
                )
                self._wait_for_release(generation)
                log_rejoin(app, generation, time.monotonic())
                self._released = None
            with self._app_lock:
                self._app = app
            if self._watcher is None:
                self._watcher = threading.Thread(target=self._watch, name="broker-hold", daemon=True)
                self._watcher.start()
            return app

        return build_and_follow

    def producer(self, config: dict[str, Any]) -> Producer:
        """A Kafka producer for the application's own records (the profile app's triggers, changes
        and dead letters). In a rebuild after a maintenance: the one made while intake was held that
        holds a producer id of the new broker (``streaming.next_producer``; a producer made now
        would wait half a second for its id, and the first checkpoint with it); else a new one."""
        self._producer_config = config
        next_producer, released = self._next, self._released
        if next_producer is None or released is None or self._next_for != released[0]:
            return Producer(config)
        deadline = time.monotonic() + NEXT_PRODUCER_WAIT_SECONDS
        while next_producer.chosen is None and time.monotonic() < deadline:
            time.sleep(WATCH_SECONDS / 4)
        with self._next_lock:
            chosen = next_producer.take()
            self._next = None
        if chosen is None:
            logger.warning("maintenance %d: no producer with an id of the new broker; a new one", released[0])
        return chosen or Producer(config)

    def _step_next_producer(self, hold: BrokerHold, coming: int | None, held: bool = False) -> None:
        """While a maintenance (``coming``) is prepared or held (``held``): follow it for the app's
        next producer (once the app made one), whose candidates are made once intake is held."""
        with self._next_lock:
            if coming is not None and coming != self._next_for and self._producer_config:
                self._next, self._next_for = NextProducer(self._producer_config), coming
            if self._next is None:
                return
            restarted = self._handled == self._next_for  # the app stopped for this restart
            if coming == self._next_for or (coming is None and restarted):
                self._next.step(hold.down_since(self._next_for), held)  # until the rebuild takes it
            elif coming is None:
                self._next.take()  # released without a restart: the producer in use stays
                self._next = None

    def _watch(self) -> None:
        assert self._hold is not None
        while True:
            maintenance = self._hold.coming()  # prepared or held: one read for both uses
            coming = maintenance[0] if maintenance else None
            self._step_next_producer(self._hold, coming, bool(maintenance and maintenance[1]))
            maintained = coming is not None
            if maintained:
                self._follow_maintenance(self._hold)
            time.sleep(WATCH_SECONDS_MAINTAINED if maintained else WATCH_SECONDS)

    def _follow_maintenance(self, hold: BrokerHold) -> None:
        """Stop the app when the broker is about to restart, else make its checkpoint due now.

        The app is used under ``_app_lock`` and held by no variable of this thread afterwards: a
        stopped app that this thread still held while ``resume_after_stop`` collects and freezes
        the heap would live until the next maintenance, its producers and all.
        """
        with self._app_lock:
            app = self._app
            if app is None:
                return
            restart = hold.restart_generation()
            if restart is not None and restart != self._handled:
                self._handled = self._stopped_for = restart
                self._stop_asked = time.monotonic()
                logger.info("closing Kafka clients for broker maintenance %d", restart)
                # The class's own stop: ``app.stop`` is wrapped as a stop request (app_runner).
                Application.stop(app)
            else:
                expire_checkpoint(app)

    def resume_after_stop(self) -> bool:
        """After ``run()`` returned: True when it stopped for a broker restart and the new broker is up
        (or the hold released): build the app again, the build waits for the release before it
        returns. False for any other stop, or when neither came."""
        generation, hold = self._stopped_for, self._hold
        if generation is None or hold is None:
            return False
        hold.stopped(generation)
        logger.info(
            "maintenance %d: Kafka clients closed %.3fs after the stop",
            generation,
            time.monotonic() - self._stop_asked,
        )
        # While the broker restarts: the stopped application's garbage goes now, not in the build.
        with self._app_lock:
            self._app = None
        logger.info("maintenance %d: garbage collected in %.3fs", generation, collect_replaced())
        deadline = time.monotonic() + RELEASE_TIMEOUT_SECONDS
        # Build as soon as the new broker is up with its topics; run once the hold is released.
        while hold.held_generation() is not None and hold.restarted_generation() != generation:
            if time.monotonic() > deadline:
                logger.error("broker maintenance %d never ended; exiting", generation)
                return False
            time.sleep(WATCH_SECONDS)
        self._stopped_for = None
        self._released = (generation, time.monotonic())
        logger.info("building the application again for broker maintenance %d", generation)
        return True

    def _wait_for_release(self, generation: int) -> None:
        """Until intake is released: offsets and commits are restored then (``RELEASE_TIMEOUT_SECONDS``
        at most; the run then finds the broker as it is)."""
        assert self._hold is not None
        deadline = time.monotonic() + RELEASE_TIMEOUT_SECONDS
        while self._hold.held_generation() is not None and time.monotonic() < deadline:
            time.sleep(WATCH_SECONDS / 4)
        logger.info("reconnecting after broker maintenance %d", generation)


def expire_checkpoint(app: Application) -> None:
    """Make the application's open checkpoint due now (Quix commits it on its next loop)."""
    checkpoint = getattr(app._processing_context, "_checkpoint", None)  # noqa: SLF001 - no public hook
    if checkpoint is not None:
        checkpoint._commit_interval = 0  # noqa: SLF001


def log_rejoin(app: Application, generation: int, released_at: float) -> None:
    """Log when an application rebuilt after a maintenance gets its partitions and its first record
    after the release (assignment and first fetch on the new broker: part of the maintenance's latency)."""
    original_assign = app._on_assign  # noqa: SLF001 - Quix subscribes with it in run()

    def on_assign(consumer: object, partitions: list) -> None:
        if partitions:
            logger.info(
                "maintenance %d: partitions assigned %.3fs after the release",
                generation,
                time.monotonic() - released_at,
            )
        original_assign(consumer, partitions)

    app._on_assign = on_assign  # type: ignore[method-assign]  # noqa: SLF001
    consumer = app._consumer  # noqa: SLF001
    original_poll = consumer.poll_row

    def poll_row(*args: object, **kwargs: object) -> object:
        rows = original_poll(*args, **kwargs)
        if rows:
            logger.info(
                "maintenance %d: first record %.3fs after the release",
                generation,
                time.monotonic() - released_at,
            )
            del consumer.poll_row  # back to the class's own
        return rows

    consumer.poll_row = poll_row  # type: ignore[method-assign]
