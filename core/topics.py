"""The topics Pulse uses, created with explicit configs (some brokers, e.g. Tansu, need them)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from core.settings import PulseSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    """Name, partitions and configs of one topic."""

    name: str
    partitions: int
    config: dict[str, str]


def topic_specs(settings: PulseSettings) -> list[TopicSpec]:
    """Every topic Pulse creates, with explicit retention and cleanup configs."""
    config = {
        "retention.ms": str(settings.topic_retention_ms),
        "retention.bytes": str(settings.topic_retention_bytes),
        "cleanup.policy": "delete",
    }
    partitions = settings.topic_partitions
    return [
        TopicSpec(settings.topic_events, partitions, config),
        TopicSpec(settings.topic_dlq, 1, config),
        TopicSpec(settings.topic_triggers, partitions, config),
        TopicSpec(settings.topic_profile_changes, partitions, config),
        TopicSpec(settings.topic_triggers_dlq, 1, config),
    ]


def ensure_topics(
    admin: AdminClient, specs: list[TopicSpec], replication_factor: int = 1, timeout: float = 30.0
) -> list[str]:
    """Create the topics that do not exist yet; return the names created."""
    existing = set(admin.list_topics(timeout=timeout).topics)
    missing = [spec for spec in specs if spec.name not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [
            NewTopic(
                s.name, num_partitions=s.partitions, replication_factor=replication_factor, config=s.config
            )
            for s in missing
        ],
        request_timeout=timeout,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    logger.info("created topics: %s", ", ".join(created) or "none")
    return created
