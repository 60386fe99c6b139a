"""Dagster resources, configured from PULSE_* environment variables."""

from __future__ import annotations

import dagster as dg

from core.redis_client import RedisClient, redis_from_url
from core.settings import PulseSettings


class RedisResource(dg.ConfigurableResource):
    """The profile store and reference-data Redis."""

    url: str

    def client(self) -> RedisClient:
        return redis_from_url(self.url, socket_timeout=10)


class PulseResource(dg.ConfigurableResource):
    """The Pulse settings of this deployment (data dir, topics, windows) for batch jobs."""

    data_dir: str
    redis_url: str
    kafka_brokers: str

    def settings(self) -> PulseSettings:
        return PulseSettings(
            data_dir=self.data_dir, redis_url=self.redis_url, kafka_brokers=self.kafka_brokers
        )


def default_resources() -> dict[str, dg.ConfigurableResource]:
    return {
        "redis": RedisResource(url=dg.EnvVar("PULSE_REDIS_URL")),
        "pulse": PulseResource(
            data_dir=dg.EnvVar("PULSE_DATA_DIR"),
            redis_url=dg.EnvVar("PULSE_REDIS_URL"),
            kafka_brokers=dg.EnvVar("PULSE_KAFKA_BROKERS"),
        ),
    }
