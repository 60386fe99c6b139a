"""Dagster resources, configured from PULSE_* environment variables."""

from __future__ import annotations

import dagster as dg
import redis


class RedisResource(dg.ConfigurableResource):
    """The profile store and reference-data Redis."""

    url: str

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=10)


class KafkaResource(dg.ConfigurableResource):
    """The Kafka cluster Pulse reads and writes."""

    brokers: str


def default_resources() -> dict[str, dg.ConfigurableResource]:
    return {
        "redis": RedisResource(url=dg.EnvVar("PULSE_REDIS_URL")),
        "kafka": KafkaResource(brokers=dg.EnvVar("PULSE_KAFKA_BROKERS")),
    }
