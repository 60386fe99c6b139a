"""One forget run (I/O): purge every forgotten id's rows and record what was erased, per id."""

from __future__ import annotations

import logging
import time

import redis

from assets.forget import PurgeResult, purge_archive
from assets.forgotten import read_suppressions
from core import service_registry
from core.forget_record import ForgetRecord
from core.redis_client import redis_from_url
from core.service_registry import ServiceNotConfigured
from core.settings import PulseSettings

logger = logging.getLogger(__name__)


def purge_forgotten(settings: PulseSettings) -> tuple[PurgeResult, int, dict[str, int]]:
    """Purge the archive and DuckDB file of every forgotten id; (result, forgets read, suppressions).

    The forgets counted are the first lines of the durable record, read before the suppressions:
    each of them is surely covered by this run (what ``pulse forget report`` tells pending from done).
    """
    record = ForgetRecord(settings.forget_path)
    started_ms = int(time.time() * 1000)
    forgets_read = len(record.forgets())
    try:
        client = redis_from_url(service_registry.redis_url(settings), socket_connect_timeout=5)
    except (ServiceNotConfigured, redis.RedisError) as exc:
        logger.warning("forget run without Redis (%s): the durable record alone", exc)
        client = None
    forgotten = read_suppressions(settings, client, erased_only=True)
    result = purge_archive(settings.archive_path, forgotten, settings.data_path / "pulse.duckdb")
    record.append_erasure(
        {
            "store": "archive",
            "at_ms": started_ms,
            "forgets_read": forgets_read,
            "forgotten_ids": len(forgotten),
            "per_id": result.as_dict()["per_id"],
        }
    )
    return result, forgets_read, forgotten
