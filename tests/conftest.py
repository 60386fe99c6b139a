"""Shared fixtures: a real embedded broker and Redis (started once per session), fresh names per test."""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from confluent_kafka.admin import AdminClient

from orchestration.local_services import ManagedProcess, free_port, start_broker, start_redis
from orchestration.settings import PulseSettings
from orchestration.topics import ensure_topics, topic_specs

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of a real Tansu broker for this test session."""
    proc, address = start_broker(tmp_path_factory.mktemp("broker"))
    yield address
    proc.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real Valkey server for this test session."""
    proc, url = start_redis(tmp_path_factory.mktemp("redis"), persist=False)
    yield url
    proc.stop()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def settings(broker: str, redis_url: str, tmp_path: Path) -> PulseSettings:
    """Settings with topic names and a consumer group unique to this test, topics created."""
    suffix = uuid.uuid4().hex[:8]
    s = PulseSettings(
        data_dir=tmp_path / "pulse",
        kafka_brokers=broker,
        redis_url=redis_url,
        api_port=free_port(),
        write_keys=["test-write"],
        read_keys=["test-read"],
        topic_events=f"events-{suffix}",
        topic_dlq=f"dlq-{suffix}",
        topic_triggers=f"triggers-{suffix}",
        topic_profile_changes=f"changes-{suffix}",
        topic_partitions=3,
        consumer_group=f"profile-app-{suffix}",
    )
    ensure_topics(AdminClient({"bootstrap.servers": broker}), topic_specs(s))
    return s


def settings_env(settings: PulseSettings) -> dict[str, str]:
    """The environment that gives a child process exactly these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, list):
            value = ",".join(value)
        elif isinstance(value, dict):
            value = json.dumps(value)
        env[f"PULSE_{name.upper()}"] = str(value)
    return env


def start_pulse_app(settings: PulseSettings, app: str, log_dir: Path) -> ManagedProcess:
    """Start `pulse run <app>` as a real child process."""
    proc = ManagedProcess(
        app,
        [sys.executable, "-m", "orchestration.cli", "run", app],
        log_dir / f"{app}-{uuid.uuid4().hex[:6]}.log",
        env=settings_env(settings),
        cwd=PROJECT_ROOT,
    )
    proc.start()
    return proc


@pytest.fixture
def pulse_apps(settings: PulseSettings, tmp_path: Path) -> Iterator[Callable[[str], ManagedProcess]]:
    """Factory starting `pulse run <app>` processes; all are stopped after the test."""
    started: list[ManagedProcess] = []

    def start(app: str) -> ManagedProcess:
        proc = start_pulse_app(settings, app, tmp_path / "logs")
        started.append(proc)
        if app == "api":
            proc.wait_for_port(settings.api_host, settings.api_port, timeout=60)
        return proc

    yield start
    for proc in started:
        proc.stop()
        if proc.process is not None and proc.process.returncode not in (0, -15, None):
            print(f"--- {proc.name} log ---\n{proc.log_path.read_text()[-3000:]}")

