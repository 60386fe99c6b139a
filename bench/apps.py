"""Start Pulse apps as real child processes for benchmarks."""

from __future__ import annotations

from core.settings import PulseSettings
from orchestration.local_services import ManagedProcess
from orchestration.platform import pulse_app_process, settings_process_env


def start_app(settings: PulseSettings, app: str) -> ManagedProcess:
    """`pulse run <app>` with these settings; waits for the API port when app == "api"."""
    proc = pulse_app_process(app, settings_process_env(settings), settings.data_path / "logs")
    proc.start()
    if app == "api":
        proc.wait_for_port(settings.api_host, settings.api_port, timeout=60)
    return proc
