"""`pulse forget report ID`: what was erased of a person in each store, and what the broker still holds."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import redis

from core import service_registry
from core.forget_record import ForgetRecord
from core.redis_client import redis_from_url
from core.service_registry import ServiceNotConfigured
from core.settings import PulseSettings
from core.time_format import iso_from_ms
from streaming.profiles.keys import forgotten_key

logger = logging.getLogger(__name__)

#: What a forget run erases per id (assets/forget.py KINDS), as the report names them.
ARCHIVE_KINDS = ("valid", "invalid", "dead_letters")
DUCKDB_KINDS = ("duckdb_profiles_batch", "duckdb_sessions")


def build_report(
    profile_id: str,
    forgets: Sequence[Mapping[str, Any]],
    erasures: Sequence[Mapping[str, Any]],
    mirror: Mapping[str, tuple[int, int] | None],
    topics: Mapping[str, int],
    dedupe_window_seconds: int,
) -> dict[str, Any]:
    """The report of ``profile_id`` (pure) from the forget record's lines, the Redis mirror of each id
    (forget time, events skipped; None = absent or unknown) and each topic's retention.ms."""
    mine = [(n, f) for n, f in enumerate(forgets) if profile_id in f.get("ids", ())]
    if not mine:
        return {"profile_id": profile_id, "forgotten": False}
    ids = sorted({i for _, f in mine for i in f["ids"]})
    last_index, last = mine[-1]
    at_ms = max(int(f["at_ms"]) for _, f in mine)
    redis_keys = sum(
        int(e.get("keys_deleted", 0))
        for e in erasures
        if e.get("store") == "redis" and set(e.get("ids", ())) & set(ids)
    )
    runs = [e for e in erasures if e.get("store") == "archive"]
    covering = [e for e in runs if int(e.get("forgets_read", 0)) > last_index]
    rows = {kind: 0 for kind in (*ARCHIVE_KINDS, *DUCKDB_KINDS)}
    per_id: dict[str, dict[str, int]] = {}
    for run in runs:
        for pid, counts in (run.get("per_id") or {}).items():
            if pid in ids:
                mine_counts = per_id.setdefault(pid, dict.fromkeys(rows, 0))
                for kind in rows:
                    mine_counts[kind] += int(counts.get(kind, 0))
                    rows[kind] += int(counts.get(kind, 0))
    mirrored = {pid: mirror.get(pid) for pid in ids}
    return {
        "profile_id": profile_id,
        "forgotten": True,
        "forgotten_at": iso_from_ms(at_ms),
        "ids": ids,
        "forgets": [{"at": iso_from_ms(int(f["at_ms"])), "requested": f.get("requested")} for _, f in mine],
        "redis": {
            "keys_deleted": redis_keys,
            "suppressed": all(m is not None and m[0] >= at_ms for m in mirrored.values()),
            "events_skipped_by_stream": sum(m[1] for m in mirrored.values() if m is not None),
            "dedupe_markers_expire_by": iso_from_ms(at_ms + dedupe_window_seconds * 1000),
        },
        "archive": {
            "purged": bool(covering),
            "purged_at": iso_from_ms(int(covering[0]["at_ms"])) if covering else None,
            "rows_erased": {k: rows[k] for k in ARCHIVE_KINDS},
            "rows_erased_per_id": {
                pid: {k: c[k] for k in ARCHIVE_KINDS} for pid, c in sorted(per_id.items())
            },
        },
        "duckdb": {"rows_erased": {k.removeprefix("duckdb_"): rows[k] for k in DUCKDB_KINDS}},
        "broker": {
            topic: {"retention_ms": ms, "held_until": iso_from_ms(at_ms + ms) if ms >= 0 else None}
            for topic, ms in topics.items()
        },
        "retained": (
            "the ids themselves and the forget time, in the forget record and its Redis mirror, "
            "for as long as the forget must hold; records in the broker until held_until "
            "(a record goes with its log segment, so up to segment.ms later); "
            "dedupe markers (event ids) until dedupe_markers_expire_by"
        ),
        "last_forget_requested": last.get("requested"),
    }


def forget_report(settings: PulseSettings, profile_id: str) -> dict[str, Any]:
    """The report of ``profile_id`` from the durable record, Redis (if reachable) and the topic configs."""
    record = ForgetRecord(settings.forget_path)
    forgets = record.forgets()
    ids = sorted({i for f in forgets if profile_id in f.get("ids", ()) for i in f["ids"]})
    if not ids:  # never forgotten: no store to ask
        return build_report(profile_id, forgets, [], {}, {}, settings.dedupe_window_seconds)
    return build_report(
        profile_id,
        forgets,
        record.erasures(),
        _mirror(settings, ids),
        topic_retention(settings),
        settings.dedupe_window_seconds,
    )


def _mirror(settings: PulseSettings, ids: list[str]) -> dict[str, tuple[int, int] | None]:
    if not ids:
        return {}
    try:
        client = redis_from_url(service_registry.redis_url(settings), socket_connect_timeout=3)
        pipe = client.pipeline(transaction=False)
        for pid in ids:
            pipe.hmget(forgotten_key(pid), "at", "skipped")
        replies = pipe.execute()
    except (redis.RedisError, ServiceNotConfigured) as exc:
        logger.warning("Redis not reachable (%s): the report shows no Redis mirror", exc)
        return dict.fromkeys(ids)
    return {
        pid: (int(at), int(skipped or 0)) if at is not None else None
        for pid, (at, skipped) in zip(ids, replies, strict=True)
    }


def topic_retention(settings: PulseSettings) -> dict[str, int]:
    """retention.ms of each topic that may hold a person's records: the broker's, else the setting."""
    topics = [
        settings.topic_events,
        settings.topic_dlq,
        settings.topic_triggers,
        settings.topic_profile_changes,
        settings.topic_triggers_dlq,
    ]
    found = dict.fromkeys(topics, settings.topic_retention_ms)
    try:
        from confluent_kafka.admin import AdminClient, ConfigResource

        from core.kafka_config import client_config

        admin = AdminClient(client_config(settings, service_registry.kafka_brokers(settings)))
        futures = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, t) for t in topics])
        for resource, future in futures.items():
            entry = future.result(timeout=5).get("retention.ms")
            if entry is not None and entry.value is not None:
                found[resource.name] = int(entry.value)
    except Exception as exc:  # no broker, a broker without DescribeConfigs: the settings say it
        logger.info("topic retention from the settings (%s)", exc)
    return found
