"""The README's first command: `pulse up` runs everything, other commands find it, Ctrl-C stops it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from orchestration.local_services import free_port, port_accepts

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def pulse(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orchestration.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_pulse_up_demo_doctor_and_clean_stop(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    api_port, dagster_port = free_port(), free_port()
    env.update(
        PULSE_DATA_DIR=str(tmp_path / "data"),
        PULSE_API_PORT=str(api_port),
        PULSE_DAGSTER_PORT=str(dagster_port),
    )
    log = open(tmp_path / "up.log", "w")
    up = subprocess.Popen(
        [sys.executable, "-m", "orchestration.cli", "up"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        services_file = tmp_path / "data" / "services.json"
        deadline = time.monotonic() + 120
        # Up once it has said so: it records services.json just before printing the URLs, then how to stop.
        while "Stop: Ctrl-C" not in (output := (tmp_path / "up.log").read_text()):
            assert up.poll() is None, output
            assert time.monotonic() < deadline, f"pulse up did not come up:\n{output}"
            time.sleep(0.5)
        services = json.loads(services_file.read_text())
        for url in (services["api_url"], services["dagster_url"], "dev-write-key", "dev-read-key"):
            assert url in output
        assert "dev-webhook-secret" in output  # the webhook relay runs too, signing with the dev secret

        demo = pulse("demo", "--events", "600", "--users", "20", "--seed", "4", env=env)
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "failed requests" in demo.stdout
        profile_id = demo.stdout.rsplit("/v1/profiles/", 1)[1].split()[0]

        deadline = time.monotonic() + 60
        while True:
            response = httpx.get(
                f"{services['api_url']}/v1/profiles/{profile_id}", headers={"X-Pulse-Key": "dev-read-key"}
            )
            if response.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert response.status_code == 200
        assert response.json()["event_count"] >= 1

        deadline = time.monotonic() + 120
        while not port_accepts("127.0.0.1", dagster_port):
            assert time.monotonic() < deadline, "dagster dev did not listen"
            time.sleep(1)
        doctor = pulse("doctor", env=env)
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        assert "FAIL" not in doctor.stdout
    finally:
        os.killpg(up.pid, signal.SIGINT)
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
            raise
        log.close()
    assert up.returncode == 0, (tmp_path / "up.log").read_text()[-3000:]
    assert "stopped." in (tmp_path / "up.log").read_text()
    assert "relay delivering webhooks" in (tmp_path / "data" / "logs" / "relay.log").read_text()
    assert not (tmp_path / "data" / "services.json").exists()
    assert not port_accepts("127.0.0.1", api_port)
    # A second command without `pulse up` says what to do instead of hanging.
    doctor = pulse("doctor", env=env)
    assert doctor.returncode == 1
    assert "pulse up" in doctor.stdout
