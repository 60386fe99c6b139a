"""librdkafka configuration for Pulse's producers, consumers and admin clients."""

from __future__ import annotations

from typing import Any

from orchestration.settings import LOCAL_CONSUMER_DEFAULTS, PulseSettings
from streaming.liveness import STATS_INTERVAL_MS, StatusWriter, status_path


def client_config(settings: PulseSettings, brokers: str) -> dict[str, Any]:
    """Settings every client shares: bootstrap servers plus PULSE_KAFKA_CONFIG (SASL, TLS...)."""
    return {"bootstrap.servers": brokers, **settings.kafka_config}


def durable_producer_config(settings: PulseSettings, brokers: str) -> dict[str, Any]:
    """A producer whose delivery report means the broker has the record (acks=all)."""
    return {
        "bootstrap.servers": brokers,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 2,
        "message.timeout.ms": settings.delivery_timeout_ms,
        "compression.type": "lz4",
        **settings.kafka_config,
    }


def consumer_tuning(settings: PulseSettings) -> dict[str, Any]:
    """Low-latency consumer defaults; PULSE_KAFKA_CONFIG overrides any of them."""
    return {**LOCAL_CONSUMER_DEFAULTS, **settings.kafka_config}


def app_consumer_config(settings: PulseSettings, app: str) -> dict[str, Any]:
    """``consumer_tuning`` plus the statistics callback behind `pulse probe APP` (streaming/liveness.py)."""
    return {
        "statistics.interval.ms": STATS_INTERVAL_MS,
        **consumer_tuning(settings),
        "stats_cb": StatusWriter(status_path(settings.data_path, app)),
    }
