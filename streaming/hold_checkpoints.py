"""Checkpoint at once while `pulse up` holds intake to maintain its embedded broker.

Maintenance waits until every record is applied and committed (core.broker_hold,
orchestration/broker_maintenance.py). The archiver checkpoints every few seconds, so without this
intake would stay held for up to that long. While a hold is in force, a watcher thread expires the
application's current checkpoint, which Quix then commits on its next loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from quixstreams import Application

from core.broker_hold import BrokerHold
from core.settings import PulseSettings

logger = logging.getLogger(__name__)

WATCH_SECONDS = 0.02


def checkpointing_on_hold(
    build: Callable[[], Application], settings: PulseSettings
) -> Callable[[], Application]:
    """``build``, and (when `pulse up` set ``PULSE_BROKER_HOLD_DIR``) checkpoints forced during holds."""
    if settings.broker_hold_dir is None:
        return build
    hold = BrokerHold(settings.broker_hold_dir)
    current: list[Application] = []

    def watch() -> None:
        while True:
            if current and hold.held_generation() is not None:
                expire_checkpoint(current[-1])
            threading.Event().wait(WATCH_SECONDS)

    def build_and_watch() -> Application:
        app = build()
        if not current:
            threading.Thread(target=watch, name="checkpoint-on-hold", daemon=True).start()
        current[:] = [app]
        return app

    return build_and_watch


def expire_checkpoint(app: Application) -> None:
    """Make the application's open checkpoint due now (Quix commits it on its next loop)."""
    checkpoint = getattr(app._processing_context, "_checkpoint", None)  # noqa: SLF001 - no public hook
    if checkpoint is not None:
        checkpoint._commit_interval = 0  # noqa: SLF001
