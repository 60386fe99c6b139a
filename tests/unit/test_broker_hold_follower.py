"""BrokerHoldFollower: a stopped application is garbage by the time the follower collects the heap."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from pathlib import Path
from types import SimpleNamespace

from quixstreams import Application

from core.broker_hold import BrokerHold
from streaming.broker_hold_follower import BrokerHoldFollower


class StoppableApp(Application):
    """What ``Application.stop`` and ``expire_checkpoint`` touch of a Quix application, no Kafka."""

    def __init__(self, stops: list[int]) -> None:  # no super().__init__: nothing to connect to
        self.stops = stops
        self._run_tracker = SimpleNamespace(stop=self._count_stop)
        self._stop_event = threading.Event()
        self._state_manager = SimpleNamespace(using_changelogs=False)
        self._processing_context = SimpleNamespace(_checkpoint=None)
        self.cycle = self  # as every real application: only a collection frees it

    def _count_stop(self) -> None:
        self.stops.append(1)


def wait_until(condition, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_the_stopped_app_is_collected_while_the_broker_restarts(tmp_path: Path) -> None:
    hold = BrokerHold(tmp_path / "hold")
    hold.prepare()
    follower = BrokerHoldFollower(hold)
    stops: list[int] = []
    app = StoppableApp(stops)
    stopped_app = weakref.ref(app)
    follower._app = app  # noqa: SLF001 - what wrap() does with the application it built
    threading.Thread(target=follower._watch, daemon=True).start()  # noqa: SLF001
    try:
        hold.begin_prepare(1)
        hold.begin(1)
        hold.begin_restart(1)
        wait_until(lambda: len(stops) == 1)  # the watcher stopped it for the restart
        del app  # run_rejoining drops the application once run() returned
        hold.begin_restarted(1)  # the new broker is up: resume_after_stop returns at once
        assert follower.resume_after_stop()
        # Collected and frozen in there: anything still holding it then kept it until the next one.
        assert stopped_app() is None, "the stopped application outlived the collection"
    finally:
        hold.release()
        gc.unfreeze()
