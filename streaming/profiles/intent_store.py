"""Publish and follow the intent model in Redis: a new version beside the old, then a pointer switch."""

from __future__ import annotations

import logging
import time

import redis

from streaming.profiles.intent import IntentModel

logger = logging.getLogger(__name__)

MODEL_POINTER = "pulse:model:intent:current"
MODEL_VERSION_PREFIX = "pulse:model:intent:v:"


def publish_intent_model(client: redis.Redis, model: IntentModel) -> str:
    """Store the model under its version, then switch the pointer to it; return the version."""
    version = model.version
    client.set(MODEL_VERSION_PREFIX + version, model.to_json())
    client.set(MODEL_POINTER, version)
    logger.info("published intent model %s (%s)", version, dict(model.metrics))
    return version


def load_intent_model(client: redis.Redis) -> IntentModel | None:
    """The published model, or None when none is (scores then stay 0.0)."""
    version = client.get(MODEL_POINTER)
    if version is None:
        return None
    text = client.get(MODEL_VERSION_PREFIX + version.decode())
    return None if text is None else IntentModel.from_json(text)


class IntentModelFollower:
    """The current model, re-read at most every ``refresh_seconds``; errors keep the last good one."""

    def __init__(self, client: redis.Redis, refresh_seconds: float = 5.0) -> None:
        self._client = client
        self._refresh = refresh_seconds
        self._checked_at = -refresh_seconds
        self._model: IntentModel | None = None

    def prime(self) -> IntentModel | None:
        """Read the model now, at start-up; raises ``redis.RedisError`` when Redis cannot be read
        (see enrichment.reference_store.ReferenceFollower.prime)."""
        self._model = load_intent_model(self._client)
        self._checked_at = time.monotonic()
        if self._model is not None:
            logger.info("scoring with intent model %s", self._model.version)
        return self._model

    def current(self) -> IntentModel | None:
        now = time.monotonic()
        if now - self._checked_at >= self._refresh:
            self._checked_at = now
            try:
                model = load_intent_model(self._client)
            except (redis.RedisError, ValueError) as exc:
                logger.warning("could not read the intent model (%s); keeping the current one", exc)
            else:
                if model is not None and (self._model is None or model.version != self._model.version):
                    logger.info("scoring with intent model %s", model.version)
                self._model = model
        return self._model
