"""Publish and follow the intent model in Redis: a new version beside the old, then a pointer switch."""

from __future__ import annotations

import logging

import redis

from core.follower import Follower
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


class IntentModelFollower(Follower["IntentModel | None"]):
    """The current model, re-read at most every ``refresh_seconds``; errors keep the last good one.

    ``prime()`` reads it before the first event (see enrichment.reference_store.ReferenceFollower).
    """

    keep_on = (redis.RedisError, ValueError)

    def __init__(self, client: redis.Redis, refresh_seconds: float = 5.0) -> None:
        super().__init__(None, refresh_seconds)
        self._client = client

    def read(self, value: IntentModel | None) -> IntentModel | None:
        model = load_intent_model(self._client)
        if model is not None and (value is None or model.version != value.version):
            logger.info("scoring with intent model %s", model.version)
        return model
