"""run_rejoining: a lost group membership builds a fresh application; other errors and stops pass through."""

from __future__ import annotations

import signal
import threading

import pytest
from confluent_kafka import KafkaError
from quixstreams.checkpointing.exceptions import CheckpointConsumerCommitError

from streaming.app_runner import run_rejoining


class ScriptedApp:
    """Stands in for a Quix Application whose run() follows a script of outcomes."""

    def __init__(self, outcome: BaseException | None, runs: list[str]) -> None:
        self._outcome = outcome
        self._runs = runs
        self.stopped: list[bool] = []

    def stop(self, fail: bool = False) -> None:
        self.stopped.append(fail)

    def run(self) -> None:
        self._runs.append("run")
        if self._outcome is not None:
            self.stop(fail=True)  # what Quix's exception handler does
            raise self._outcome


def scripted(outcomes: list[BaseException | None]):
    runs: list[str] = []
    queue = list(outcomes)
    return (lambda: ScriptedApp(queue.pop(0), runs)), runs


@pytest.fixture(autouse=True)
def keep_signal_handlers():
    saved = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGTERM, saved[0])
    signal.signal(signal.SIGINT, saved[1])


def commit_error() -> CheckpointConsumerCommitError:
    return CheckpointConsumerCommitError(
        KafkaError(KafkaError.UNKNOWN_MEMBER_ID, "Commit failed: Broker: Unknown member")
    )


def test_a_lost_membership_rebuilds_the_app_until_it_stops_cleanly():
    build, runs = scripted([commit_error(), commit_error(), None])
    assert run_rejoining(build, pause_seconds=0) == 2
    assert runs == ["run", "run", "run"]


def test_other_errors_are_not_swallowed():
    build, runs = scripted([commit_error(), ValueError("a bug")])
    with pytest.raises(ValueError, match="a bug"):
        run_rejoining(build, pause_seconds=0)
    assert len(runs) == 2


def test_too_many_rejoins_reraise_for_a_supervisor():
    build, runs = scripted([commit_error()] * 4)
    with pytest.raises(CheckpointConsumerCommitError):
        run_rejoining(build, max_rejoins=2, pause_seconds=0)
    assert len(runs) == 3


def test_a_stop_requested_while_rejoining_ends_the_loop():
    runs: list[str] = []

    class StoppedWhileFailing(ScriptedApp):
        def run(self) -> None:
            runs.append("run")
            raise commit_error()

    def build() -> ScriptedApp:
        if runs:  # the second build would be a rejoin: it must not happen after SIGTERM
            raise AssertionError("rebuilt after a stop request")
        return StoppedWhileFailing(None, runs)

    threading.Timer(0.1, lambda: signal.raise_signal(signal.SIGTERM)).start()
    assert run_rejoining(build, pause_seconds=5) == 1
    assert runs == ["run"]


def test_a_commit_failing_after_a_stop_request_ends_the_loop():
    runs: list[str] = []

    class FailsWhileStopping(ScriptedApp):
        def run(self) -> None:
            runs.append("run")
            self.stop()  # SIGTERM: Quix's handler asks for a graceful stop ...
            raise commit_error()  # ... and the final commit finds the member gone

    def build() -> ScriptedApp:
        if runs:
            raise AssertionError("rebuilt after a stop request")
        return FailsWhileStopping(None, runs)

    assert run_rejoining(build, pause_seconds=5) == 0


def test_frozen_after_freezes_what_the_build_made_and_a_rebuild_unfreezes_first():
    import gc

    from streaming.app_runner import frozen_after

    made = []
    build = frozen_after(lambda: made.append(ScriptedApp(None, [])) or made[-1])
    try:
        app = build()
        assert app is made[0] and gc.get_freeze_count() > 0
        counts = []
        frozen_again = frozen_after(lambda: counts.append(gc.get_freeze_count()) or ScriptedApp(None, []))
        frozen_again()
        assert counts == [0], "the rebuild did not unfreeze before building"
    finally:
        gc.unfreeze()


def test_a_stop_for_a_broker_restart_builds_the_app_again():
    build, runs = scripted([None, None])
    answers = [True, False]  # stopped for a restart once, then a plain stop
    assert run_rejoining(build, resume=lambda: answers.pop(0)) == 0
    assert runs == ["run", "run"]


def test_a_plain_stop_does_not_build_again():
    build, runs = scripted([None])
    assert run_rejoining(build, resume=lambda: False) == 0
    assert runs == ["run"]


def test_a_stopped_app_is_garbage_before_the_next_build():
    """Quix's run() installs signal handlers bound to its app; they must not keep a stopped app alive
    while a rebuild collects and freezes the heap (its producers would live until the next rebuild)."""
    import gc
    import weakref

    class InstallsHandlers(ScriptedApp):
        def run(self) -> None:
            signal.signal(signal.SIGTERM, self._on_signal)  # what Quix's run() does
            signal.signal(signal.SIGINT, self._on_signal)
            super().run()

        def _on_signal(self, *_: object) -> None:
            self.stop()

    runs: list[str] = []
    stopped: list[weakref.ref] = []
    alive_at_resume: list[bool] = []

    def build() -> ScriptedApp:
        app = InstallsHandlers(None, runs)
        app.cycle = app  # a reference cycle, as any real app has: only a collection frees it
        stopped.append(weakref.ref(app))
        return app

    def resume() -> bool:
        gc.collect()  # what collect_replaced does
        alive_at_resume.append(stopped[-1]() is not None)
        return len(runs) < 2

    assert run_rejoining(build, resume=resume) == 0
    assert alive_at_resume == [False, False]
