"""librdkafka configuration for Pulse's producers, consumers and admin clients."""

from __future__ import annotations

from typing import Any

from core.settings import LOCAL_CONSUMER_DEFAULTS, PulseSettings


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
