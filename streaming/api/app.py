"""The collector and serving API (FastAPI): events in, profiles and decisions out.

The routes live in ``routes_*`` modules and ``browser``; what they share is on
``app.state.services`` (``services``).
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from core.settings import PulseSettings
from quality.json_schema import event_json_schema
from streaming.api import routes_collector, routes_ops, routes_profiles, routes_segment
from streaming.api.browser import add_cors, browser_router
from streaming.api.delivery import AcknowledgedProducer
from streaming.api.routes_segment_browser import segment_browser_router
from streaming.api.services import ApiServices, lifespan
from streaming.profiles.store import RedisProfileStore

logger = logging.getLogger(__name__)


def create_app(
    settings: PulseSettings,
    *,
    producer: AcknowledgedProducer | None = None,
    store: RedisProfileStore | None = None,
) -> FastAPI:
    """Build the API. Without ``producer``/``store`` they are created from settings at start-up."""
    services = ApiServices.from_settings(settings, producer=producer, store=store)
    app = FastAPI(
        title="Pulse API",
        version="1",
        description="Collector (events in) and serving API (profiles and decisions out).",
        lifespan=lifespan,
    )
    app.state.services = services
    app.add_exception_handler(redis.ConnectionError, _redis_unavailable)
    app.add_exception_handler(redis.TimeoutError, _redis_unavailable)
    for router in (
        browser_router(settings),
        routes_collector.router,
        routes_segment.router,
        segment_browser_router(settings),
        routes_profiles.router,
        routes_ops.router,
    ):
        _add_routes(app, router)
    add_cors(app, settings)
    _add_event_schema_to_openapi(app)
    return app


def _add_routes(app: FastAPI, router: APIRouter) -> None:
    """Add the router's routes to the app itself, rather than with ``app.include_router``.

    Since FastAPI 0.137 an included router stays a node of the route tree that every request
    walks through (about 10 µs each here), and ingestion is the hot path. The routes being shared,
    ``app.dependency_overrides`` does not reach them.
    """
    app.router.routes.extend(router.routes)


async def _redis_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    """Profiles and decisions live in Redis: while it is down, ask the client to retry."""
    logger.warning("Redis unavailable: %s", type(exc).__name__)
    return JSONResponse(
        {"detail": "the profile store (Redis) is unavailable; retry shortly"},
        status_code=503,
        headers={"Retry-After": "1"},
    )


def _add_event_schema_to_openapi(app: FastAPI) -> None:
    """Publish the event contract as ``components.schemas.Event``, which ``POST /v1/events`` refers to."""
    original_openapi = app.openapi

    def openapi_with_event_schema() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = original_openapi()  # FastAPI caches it in app.openapi_schema
            event = {k: v for k, v in event_json_schema().items() if k not in ("$schema", "$id")}
            schema.setdefault("components", {}).setdefault("schemas", {})["Event"] = event
        return app.openapi_schema

    app.openapi = openapi_with_event_schema  # type: ignore[method-assign]
