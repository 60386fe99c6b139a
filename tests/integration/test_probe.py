"""`pulse probe`: live and ready once the real apps poll a real broker; not live while stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from orchestration.platform import settings_process_env
from tests.integration.helpers import eventually

pytestmark = pytest.mark.integration


def probe(settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = settings_process_env(settings)
    return subprocess.run(
        [sys.executable, "-m", "orchestration.cli", "probe", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_probes_follow_the_apps_polling_loop(settings, pulse_apps):
    assert probe(settings, "profile-app").returncode == 1  # nothing has run on this data directory
    profile_app = pulse_apps("profile-app")
    pulse_apps("archiver")
    for app in ("profile-app", "archiver"):
        assert eventually(lambda app=app: probe(settings, app, "--ready").returncode == 0, 90), probe(
            settings, app, "--ready"
        ).stdout
    ready = probe(settings, "profile-app", "--ready").stdout
    assert "group up/steady" in ready and "3 partition(s)" in ready

    os.kill(profile_app.process.pid, signal.SIGSTOP)  # the loop stops polling; the status file ages
    try:
        assert eventually(lambda: probe(settings, "profile-app", "--max-age", "8").returncode == 1, 30)
        assert "stuck" in probe(settings, "profile-app", "--max-age", "8").stdout
    finally:
        os.kill(profile_app.process.pid, signal.SIGCONT)
    assert eventually(lambda: probe(settings, "profile-app", "--max-age", "8").returncode == 0, 60)
