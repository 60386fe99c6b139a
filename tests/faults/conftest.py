"""Fixtures of the fault-injection suite and the table of faults and invariants it prints at the end."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from core.settings import PulseSettings
from orchestration.local_services import ManagedProcess
from orchestration.platform import pulse_app_process, settings_process_env
from tests.faults.chaos import Supervisor, log_tail, resume
from tests.faults.report import RUNS, FaultRun, markdown_table

Launch = Callable[..., ManagedProcess]


@pytest.fixture(scope="session")
def fault_seed() -> int:
    """Seed of the random fault points; set PULSE_FAULT_SEED to replay a run."""
    return int(os.environ.get("PULSE_FAULT_SEED") or random.randrange(1_000_000))


@pytest.fixture
def rng(fault_seed: int, request: pytest.FixtureRequest) -> random.Random:
    return random.Random(f"{fault_seed}:{request.node.name}")


@pytest.fixture
def fault_run(request: pytest.FixtureRequest, fault_seed: int) -> Iterator[FaultRun]:
    marker = request.node.get_closest_marker("fault")
    run = FaultRun(request.node.name, marker.args[0] if marker else request.node.name)
    run.inject(f"seed {fault_seed}")
    RUNS.append(run)
    began = time.monotonic()
    yield run
    run.seconds = time.monotonic() - began


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launch]:
    """Starts `pulse run <app>` with the given settings; every process is resumed and stopped
    after the test.
    """
    started: list[ManagedProcess] = []

    def start(app: str, settings: PulseSettings, *, wait_for_port: bool = True) -> ManagedProcess:
        proc = pulse_app_process(
            app, settings_process_env(settings), tmp_path / "logs" / f"{app}-{len(started)}"
        )
        proc.start()
        started.append(proc)
        if app == "api" and wait_for_port:
            proc.wait_for_port(settings.api_host, settings.api_port, timeout=60)
        return proc

    yield start
    for proc in started:
        resume(proc)  # a stopped process cannot handle SIGTERM
        proc.stop(timeout=5)
        code = proc.process.returncode if proc.process is not None else None
        if code not in (0, -15, -9, None):
            print(f"--- {proc.name} exited {code}: {proc.log_path} ---\n{log_tail(proc)}")


@pytest.fixture
def supervise(launch: Launch) -> Iterator[Callable[[Callable[[str], ManagedProcess], list[str]], Supervisor]]:
    """Supervisors of named processes; closed before ``launch`` stops the processes."""
    supervisors: list[Supervisor] = []

    def make(start: Callable[[str], ManagedProcess], names: list[str]) -> Supervisor:
        supervisors.append(Supervisor(start, names))
        return supervisors[-1]

    yield make
    for supervisor in supervisors:
        supervisor.close()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "fault(name): the fault a fault-injection test injects (for the report table)"
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    run = item.funcargs.get("fault_run") if hasattr(item, "funcargs") else None
    if not isinstance(run, FaultRun):
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        if hasattr(report, "wasxfail"):
            run.outcome = "xfailed (known bug)" if report.outcome == "skipped" else "XPASS (bug fixed?)"
        else:
            run.outcome = report.outcome


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RUNS:
        return
    terminalreporter.section("faults injected and invariants held")
    for line in markdown_table(RUNS).splitlines():
        terminalreporter.write_line(line)
