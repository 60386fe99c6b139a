"""librdkafka configuration for Pulse's producers, consumers and admin clients."""

from __future__ import annotations

from typing import Any

from core.settings import EMBEDDED_BROKER_CONSUMER_DEFAULTS, LOCAL_CONSUMER_DEFAULTS, PulseSettings


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
    """Low-latency consumer defaults (shorter still on `pulse up`'s embedded broker, whose
    maintenance makes the apps join again); PULSE_KAFKA_CONFIG overrides any of them."""
    embedded = EMBEDDED_BROKER_CONSUMER_DEFAULTS if settings.broker_hold_dir else {}
    return {**LOCAL_CONSUMER_DEFAULTS, **embedded, **settings.kafka_config}
