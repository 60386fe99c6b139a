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


#: Apps that need no 5 ms fetches wait longer per fetch. Tansu answers a fetch only after its full
#: ``fetch.wait.max.ms``, so each consumer costs the broker CPU at 1000/wait fetches a second, busy
#: or idle (measured: 3 idle consumers took 0.155 of a core at 5 ms, 0.025 at 100 ms). The
#: archiver checkpoints every 5 s; a webhook may wait 50 ms more.
APP_FETCH_WAIT_MS: dict[str, int] = {"archiver": 100, "relay": 50}


def consumer_tuning(settings: PulseSettings, app: str | None = None) -> dict[str, Any]:
    """Low-latency consumer defaults: longer fetch waits for ``app``s in APP_FETCH_WAIT_MS, a shorter
    session on `pulse up`'s embedded broker (its maintenance makes the apps join again);
    PULSE_KAFKA_CONFIG overrides any of them."""
    tuning: dict[str, Any] = dict(LOCAL_CONSUMER_DEFAULTS)
    if settings.broker_hold_dir:
        tuning.update(EMBEDDED_BROKER_CONSUMER_DEFAULTS)
    if app in APP_FETCH_WAIT_MS:
        tuning["fetch.wait.max.ms"] = APP_FETCH_WAIT_MS[app]
    return {**tuning, **settings.kafka_config}
