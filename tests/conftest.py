"""Shared fixtures: a real embedded broker and Redis (started once per session), fresh names per test."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from confluent_kafka.admin import AdminClient
from hypothesis import Phase
from hypothesis import settings as hypothesis_settings

from core.settings import PulseSettings
from core.topics import ensure_topics, topic_specs
from orchestration.local_services import ManagedProcess, free_port, start_broker, start_redis
from orchestration.platform import pulse_app_process, settings_process_env

# Property tests: no wall-clock deadline on shared CI cores, and a failure prints the blob that
# replays it (`@reproduce_failure`) without the slow "explain" phase.
hypothesis_settings.register_profile(
    "pulse",
    deadline=None,
    print_blob=True,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
)
hypothesis_settings.load_profile("pulse")


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
        topic_triggers_dlq=f"triggers-dlq-{suffix}",
        topic_partitions=3,
        consumer_group=f"profile-app-{suffix}",
        archiver_consumer_group=f"archiver-{suffix}",
        relay_consumer_group=f"relay-{suffix}",
        archive_commit_interval_seconds=0.5,
    )
    ensure_topics(AdminClient({"bootstrap.servers": broker}), topic_specs(s))
    return s


@pytest.fixture
def pulse_apps(settings: PulseSettings, tmp_path: Path) -> Iterator[Callable[[str], ManagedProcess]]:
    """Factory starting `pulse run <app>` processes; all are stopped after the test."""
    started: list[ManagedProcess] = []

    def start(app: str) -> ManagedProcess:
        proc = pulse_app_process(app, settings_process_env(settings), tmp_path / f"logs-{len(started)}")
        proc.start()
        started.append(proc)
        if app == "api":
            proc.wait_for_port(settings.api_host, settings.api_port, timeout=60)
        return proc

    yield start
    for proc in started:
        proc.stop()
        if proc.process is not None and proc.process.returncode not in (0, -15, None):
            print(f"--- {proc.name} log ---\n{proc.log_path.read_text()[-3000:]}")
