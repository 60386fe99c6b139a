"""The API about itself: the event contract's JSON Schema, health, and Prometheus metrics."""

from __future__ import annotations

import logging
from typing import Any

import redis
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from quality.json_schema import event_json_schema
from streaming.api.metrics import IDENTITY_LINKS_REFUSED
from streaming.api.services import services_of
from streaming.profiles.store import RedisProfileStore

logger = logging.getLogger(__name__)
router = APIRouter()


@router.get("/v1/schema/event", tags=["collector"])
def event_schema() -> dict[str, Any]:
    """JSON Schema of one event (the event contract)."""
    return event_json_schema()


@router.get("/healthz", tags=["operations"])
async def healthz(request: Request) -> JSONResponse:
    """Liveness and dependencies: 200 when Redis and the broker answer, else 503."""
    services = services_of(request)
    checks = {
        "redis": await run_in_threadpool(_redis_ok, services.store),
        "broker": await run_in_threadpool(services.producer.broker_reachable, 2.0),
    }
    healthy = all(checks.values())
    return JSONResponse(
        {"status": "ok" if healthy else "degraded", **checks}, status_code=200 if healthy else 503
    )


@router.get("/metrics", tags=["operations"])
def prometheus_metrics(request: Request) -> Response:
    """Prometheus metrics."""
    _count_refused_links(request)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def _count_refused_links(request: Request) -> None:
    """The refused identity links as Redis records them (every reader records the ones it finds)."""
    store = services_of(request).store
    if store is None:
        return
    try:
        IDENTITY_LINKS_REFUSED.set(store.refused_link_count())
    except redis.RedisError:
        logger.warning("cannot read the refused identity links for /metrics", exc_info=True)


def _redis_ok(store: RedisProfileStore) -> bool:
    try:
        return bool(store.client.ping())
    except redis.RedisError:
        return False
