"""Dagster resources, configured from PULSE_* environment variables."""

from __future__ import annotations

import dagster as dg

from orchestration.settings import PulseSettings
from streaming.profiles.redis_client import RedisClient, redis_from_url


class RedisResource(dg.ConfigurableResource):
    """The profile store and reference-data Redis."""

    url: str

    def client(self) -> RedisClient:
        return redis_from_url(self.url, socket_timeout=10)


class KafkaResource(dg.ConfigurableResource):
    """The Kafka cluster Pulse reads and writes."""

    brokers: str


class PulseResource(dg.ConfigurableResource):
    """The Pulse settings of this deployment (data dir, topics, windows) for batch jobs."""

    data_dir: str
    redis_url: str
    kafka_brokers: str

    def settings(self) -> PulseSettings:
        return PulseSettings(data_dir=self.data_dir, redis_url=self.redis_url, kafka_brokers=self.kafka_brokers)


def default_resources() -> dict[str, dg.ConfigurableResource]:
    return {
        "redis": RedisResource(url=dg.EnvVar("PULSE_REDIS_URL")),
        "kafka": KafkaResource(brokers=dg.EnvVar("PULSE_KAFKA_BROKERS")),
        "pulse": PulseResource(
            data_dir=dg.EnvVar("PULSE_DATA_DIR"),
            redis_url=dg.EnvVar("PULSE_REDIS_URL"),
            kafka_brokers=dg.EnvVar("PULSE_KAFKA_BROKERS"),
        ),
    }
