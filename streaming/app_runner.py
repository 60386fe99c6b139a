"""Keep a Quix Streams application running when its consumer loses its group membership.

A consumer that misses its session or ``max.poll.interval.ms`` (a long GC pause, a stopped
container, a starved CPU) is expelled from the group; its next offset commit fails with
``Unknown member`` and Quix raises :class:`CheckpointConsumerCommitError` out of ``run()``.
Nothing is lost: the uncommitted records are redelivered to whoever owns the partitions now, and
every Pulse sink is idempotent. So instead of exiting (and waiting for a supervisor), the app
builds a fresh Application, which joins the group as a new member and carries on from the last
committed offsets.
"""

from __future__ import annotations

import gc
import logging
import signal
import time
from collections.abc import Callable
from types import FrameType

from quixstreams import Application
from quixstreams.checkpointing.exceptions import CheckpointConsumerCommitError

logger = logging.getLogger(__name__)

#: Failures after which a new consumer can simply rejoin the group.
REJOINABLE: tuple[type[BaseException], ...] = (CheckpointConsumerCommitError,)


def run_rejoining(
    build: Callable[[], Application],
    *,
    max_rejoins: int = 100,
    pause_seconds: float = 1.0,
    resume: Callable[[], bool] = lambda: False,
) -> int:
    """Run ``build()``'s application until it stops; rebuild it after a lost group membership.

    Returns how many times it rejoined. A stop request (SIGTERM/SIGINT) ends the loop, also when
    the failure came from the final commit of a stopping app; after ``max_rejoins`` rejoins the
    next failure is re-raised, for a supervisor to see. When ``run()`` returns otherwise and
    ``resume()`` says so (the app stopped for a broker restart), the app is built again.
    """
    stop_requested = False

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stop_requested
        stop_requested = True

    rejoins = 0
    while True:
        app: Application | None = build()
        _remember_graceful_stops(app, request_stop)
        try:
            app.run()
            # Quix's handlers are bound methods of the stopped app: replaced, it can go before the
            # next one is built (a frozen heap would otherwise keep it, producers and all).
            _handle_stops(request_stop)
            app = None
            # First: Quix's shutdown path calls ``app.stop()`` itself, so a stop for a broker
            # restart also looks like a stop request here.
            if resume():
                continue
            return rejoins
        except REJOINABLE as exc:
            if stop_requested:
                logger.warning(
                    "the last commit failed while stopping (%s); its records will be redelivered", exc
                )
                return rejoins
            # Quix's own handlers point at the app that just failed: catch a stop request meanwhile.
            _handle_stops(request_stop)
            rejoins += 1
            if rejoins > max_rejoins:
                raise
            logger.warning(
                "consumer lost its group membership (%s); rejoining as a new member (%d)", exc, rejoins
            )
            deadline = time.monotonic() + pause_seconds
            while not stop_requested and time.monotonic() < deadline:
                time.sleep(0.05)
            if stop_requested:
                logger.info("stop requested while rejoining; exiting")
                return rejoins


def _handle_stops(handler: Callable[[int, FrameType | None], None]) -> None:
    """SIGTERM and SIGINT call ``handler`` (between two applications: each ``run()`` sets its own)."""
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


#: Set by ``collect_replaced``: the next ``frozen_after`` build need not walk the heap again.
_collected_ahead = False


def collect_replaced() -> float:
    """Let a stopped application's garbage go now: unfreeze, collect everything, freeze again.

    For a rebuild that has time to spare before it (``BrokerHoldFollower`` runs it while the broker
    restarts); the next ``frozen_after`` build then only collects what it made itself. Returns the
    seconds it took.
    """
    global _collected_ahead  # noqa: PLW0603 - the garbage collector's state is the process's
    started = time.monotonic()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    _collected_ahead = True
    return time.monotonic() - started


def frozen_after(build: Callable[[], Application]) -> Callable[[], Application]:
    """``build``, then ``gc.freeze()``: what an application holds lives as long as it runs.

    Keeps the garbage collector from walking all of it in every full collection, a pause that
    every record in flight waits out. A rebuild unfreezes first, so a replaced application's
    objects become collectable again, unless ``collect_replaced`` has just done so: then only the
    young generations, where the build's own short-lived objects are, are collected (a full
    collection walks the whole heap, 0.1-0.5 s).
    """

    def build_and_freeze() -> Application:
        global _collected_ahead  # noqa: PLW0603
        if _collected_ahead:
            _collected_ahead = False
            app = build()
            gc.collect(1)
        else:
            gc.unfreeze()
            app = build()
            gc.collect()
        gc.freeze()
        return app

    return build_and_freeze


def _remember_graceful_stops(app: Application, on_stop: Callable[[int, FrameType | None], None]) -> None:
    """Call ``on_stop`` whenever ``app.stop()`` is asked for a graceful stop (its signal handlers do).

    Quix replaces the process's signal handlers in ``run()``; its handlers call ``stop()``, and its
    exception handler calls ``stop(fail=True)``, which is not a stop request.
    """
    original = app.stop

    def stop(fail: bool = False) -> None:
        if not fail:
            on_stop(signal.SIGTERM, None)
        original(fail=fail)

    app.stop = stop  # type: ignore[method-assign]
