"""The collector and serving API (FastAPI): events in, profiles and decisions out."""

from __future__ import annotations

import base64
import gc
import logging
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
import redis
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from core import service_registry
from core.kafka_config import durable_producer_config
from core.redis_client import redis_from_url
from core.settings import PulseSettings
from core.time_format import now_iso
from quality.event_contract import MAX_EVENT_BYTES, EventContractError, decode_json
from quality.json_schema import event_json_schema
from streaming.api import metrics
from streaming.api.auth import Scope, denial, grants, key_from_headers
from streaming.api.browser import add_cors, browser_router
from streaming.api.delivery import AcknowledgedProducer, DeliveryFailed
from streaming.api.ingest import (
    MAX_BATCH_EVENTS,
    MAX_BODY_BYTES,
    BadRequestBody,
    BatchTooLarge,
    IngestPlan,
    Unmappable,
    events_of_body,
    plan_ingest,
)
from streaming.api.ip_privacy import IPAnonymizer
from streaming.api.keys_file import KeysFollower
from streaming.api.rate_limit import RateLimiter, SharedRateLimiter
from streaming.api.segment import (
    DEFAULT_TRACK_MAPPING,
    SegmentMappingError,
    load_track_mapping,
    segment_to_event,
)
from streaming.profiles.store import RedisProfileStore

logger = logging.getLogger(__name__)

SEGMENT_MAX_BODY_BYTES = 500 * 1024  # Segment's own batch limit
_encoder = msgspec.json.Encoder()

EVENTS_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": f'One event, or {{"events": [...]}} with at most {MAX_BATCH_EVENTS} events '
        f"and {MAX_BODY_BYTES // 1024} KB.",
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/Event"},
                        {
                            "type": "object",
                            "required": ["events"],
                            "properties": {
                                "events": {
                                    "type": "array",
                                    "maxItems": MAX_BATCH_EVENTS,
                                    "items": {"$ref": "#/components/schemas/Event"},
                                }
                            },
                        },
                    ]
                }
            }
        },
    }
}


def create_app(
    settings: PulseSettings,
    *,
    producer: AcknowledgedProducer | None = None,
    store: RedisProfileStore | None = None,
) -> FastAPI:
    """Build the API. Without ``producer``/``store`` they are created from settings at start-up."""
    keys = KeysFollower.from_settings(settings)  # PULSE_*_KEYS plus PULSE_KEYS_FILE, reloaded when it changes
    anonymizer = IPAnonymizer.from_settings(settings)
    track_mapping = (
        load_track_mapping(settings.segment_mapping_file)
        if settings.segment_mapping_file
        else DEFAULT_TRACK_MAPPING
    )
    services: dict[str, Any] = {"producer": producer, "store": store}
    services["limiter"] = RateLimiter(settings.rate_limit_events_per_second, settings.rate_limit_burst)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        owned = []
        if services["producer"] is None:
            brokers = service_registry.kafka_brokers(settings)
            services["producer"] = AcknowledgedProducer(durable_producer_config(settings, brokers))
            owned.append(services["producer"])
        if services["store"] is None:
            client = redis_from_url(service_registry.redis_url(settings), socket_timeout=5)
            services["store"] = RedisProfileStore(
                client,
                dedupe_window_seconds=settings.dedupe_window_seconds,
                session_gap_ms=settings.session_timeout_seconds * 1000,
            )
            if settings.rate_limit_shared:  # short timeouts: ingestion must not wait on Redis
                limiter_client = redis_from_url(
                    service_registry.redis_url(settings), socket_timeout=0.25, socket_connect_timeout=0.25
                )
                services["limiter"] = SharedRateLimiter(
                    limiter_client, settings.rate_limit_events_per_second, settings.rate_limit_burst
                )
        # Everything built so far lives as long as the process: move it out of the collector's
        # reach, or each full collection walks it (~50 ms here) while requests queue behind it.
        gc.collect()
        gc.freeze()
        logger.info("API ready on %s:%s", settings.api_host, settings.api_port)
        yield
        for item in owned:
            await run_in_threadpool(item.close)
        services["producer"] = producer  # drop the owned producer so its threads end

    app = FastAPI(
        title="Pulse API",
        version="1",
        description="Collector (events in) and serving API (profiles and decisions out).",
        lifespan=lifespan,
    )

    @app.exception_handler(redis.ConnectionError)
    @app.exception_handler(redis.TimeoutError)
    async def redis_unavailable(_request: Request, exc: redis.RedisError) -> JSONResponse:
        """Profiles and decisions live in Redis: while it is down, ask the client to retry."""
        logger.warning("Redis unavailable: %s", type(exc).__name__)
        return JSONResponse(
            {"detail": "the profile store (Redis) is unavailable; retry shortly"},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    def require(scope: Scope):
        async def check(  # async: pure CPU, so FastAPI need not hop to its thread pool
            request: Request,
            x_pulse_key: Annotated[str | None, Header()] = None,
            authorization: Annotated[str | None, Header()] = None,
        ) -> str:
            key = key_from_headers(x_pulse_key, authorization)
            if key is None and scope is Scope.WRITE:
                key = (
                    request.query_params.get("key") or None
                )  # sendBeacon cannot set headers; never for reads
            if key is None:
                raise HTTPException(401, "missing API key: send it in X-Pulse-Key or Authorization: Bearer")
            scopes = keys.scopes_of(key)
            if not scopes:
                raise HTTPException(401, "unknown API key")
            if not grants(scopes, scope):
                raise HTTPException(403, denial(scope))
            return key

        return Depends(check)

    def current_store() -> RedisProfileStore:
        return services["store"]

    async def store_() -> (
        RedisProfileStore
    ):  # async: as a dependency, a plain lookup needs no thread-pool hop
        return current_store()

    app.include_router(browser_router(settings, current_store))
    add_cors(app, settings)

    @app.post("/v1/events", status_code=202, openapi_extra=EVENTS_BODY_DOC, tags=["collector"])
    async def post_events(request: Request, key: str = require(Scope.WRITE)) -> JSONResponse:
        """Accept one event or a batch; valid events are durably in Kafka before the 202."""
        body = await _read_capped_body(request, MAX_BODY_BYTES)
        try:
            events = events_of_body(decode_json(body))
        except (EventContractError, BadRequestBody) as exc:
            metrics.REQUESTS.labels("400").inc()
            raise HTTPException(400, str(exc)) from None
        except BatchTooLarge as exc:
            metrics.REQUESTS.labels("413").inc()
            raise HTTPException(413, str(exc)) from None
        plan = await ingest(key, events, "collector")
        return JSONResponse(
            {"accepted": plan.accepted, "rejected": [asdict(r) for r in plan.rejected]}, status_code=202
        )

    async def ingest(key: str, events: list[Any], source: str) -> IngestPlan:
        """Rate-limit, validate, and hand events to the broker; raise the HTTP error on failure."""
        if not services["limiter"].allow(key, len(events)):
            metrics.REQUESTS.labels("429").inc()
            raise HTTPException(429, "rate limit exceeded for this key", headers={"Retry-After": "1"})
        plan = plan_ingest(
            events,
            received_at=now_iso(),
            events_topic=settings.topic_events,
            dlq_topic=settings.topic_dlq,
            source=source,
            anonymize=anonymizer.scrub,
        )
        try:
            await services["producer"].send(plan.records)
        except DeliveryFailed as exc:
            logger.warning("503: %s", exc)
            metrics.REQUESTS.labels("503").inc()
            raise HTTPException(
                503, f"events could not be stored, retry: {exc}", headers={"Retry-After": "1"}
            ) from None
        metrics.EVENTS_ACCEPTED.inc(plan.accepted)
        metrics.EVENTS_REJECTED.inc(len(plan.rejected))
        metrics.REQUESTS.labels("202").inc()
        return plan

    async def segment_call(request: Request, call: str | None) -> JSONResponse:
        body = await _read_capped_body(request, SEGMENT_MAX_BODY_BYTES * 4)
        if request.headers.get("content-encoding", "").lower() == "gzip":
            body = _gunzip_capped(body, SEGMENT_MAX_BODY_BYTES)
        if len(body) > SEGMENT_MAX_BODY_BYTES:
            raise HTTPException(413, f"body larger than {SEGMENT_MAX_BODY_BYTES} bytes")
        try:
            payload = decode_json(body)
        except EventContractError as exc:
            raise HTTPException(400, str(exc)) from None
        if not isinstance(payload, dict):
            raise HTTPException(400, "body must be a JSON object")
        key = _segment_key(request, payload)
        if key is None:
            raise HTTPException(401, "missing write key: send it as the Basic-auth user name or as writeKey")
        if not grants(keys.scopes_of(key), Scope.WRITE):
            raise HTTPException(401, "unknown write key")
        if call is None:
            messages = payload.get("batch")
            if not isinstance(messages, list):
                raise HTTPException(400, '"batch" must be an array of messages')
        else:
            messages = [payload]
        received = datetime.now(UTC)
        events: list[Any] = []
        for message in messages:
            try:
                if len(_encoder.encode(message)) > MAX_EVENT_BYTES:
                    raise SegmentMappingError(f"message larger than {MAX_EVENT_BYTES} bytes")
                events.append(
                    segment_to_event(
                        message,
                        call=call,
                        sent_at=payload.get("sentAt"),
                        received_at=received,
                        track_mapping=track_mapping,
                    )
                )
            except SegmentMappingError as exc:
                events.append(Unmappable(message, str(exc)))
        plan = await ingest(key, events, "segment")
        return JSONResponse(
            {"success": True, "accepted": plan.accepted, "rejected": [asdict(r) for r in plan.rejected]}
        )

    @app.post("/v1/batch", tags=["segment"])
    async def segment_batch(request: Request) -> JSONResponse:
        """Segment HTTP API batch: {"batch": [messages], "sentAt": ...}; Basic auth with the write key as user."""
        return await segment_call(request, None)

    def single_call_endpoint(call: str):
        async def single(request: Request) -> JSONResponse:
            return await segment_call(request, call)

        return single

    for call in ("track", "page", "screen", "identify", "alias"):
        app.add_api_route(
            f"/v1/{call}",
            single_call_endpoint(call),
            methods=["POST"],
            tags=["segment"],
            summary=f"Segment {call} call",
        )

    @app.get("/v1/profiles/{profile_id}", tags=["profiles"], dependencies=[require(Scope.READ)])
    def get_profile(profile_id: str, store: RedisProfileStore = Depends(store_)) -> dict[str, Any]:
        """The profile of a user_id, or the merged profile of the user an anonymous_id is stitched to."""
        profile = store.get_person(profile_id)
        if profile is None:
            raise HTTPException(404, f"no profile for {profile_id!r}")
        return profile

    @app.get("/v1/decisions/{profile_id}", tags=["profiles"], dependencies=[require(Scope.READ)])
    async def get_decisions(profile_id: str, store: RedisProfileStore = Depends(store_)) -> Response:
        """Current personalization decisions of a user: fired rules, offers, intent score."""
        # Two or three pipelined Redis round trips (~0.1 ms): cheaper inline than a thread-pool hop.
        view = store.decisions_view(profile_id)
        if view is None:
            raise HTTPException(404, f"no profile for {profile_id!r}")
        return Response(
            msgspec.json.encode(view), media_type="application/json"
        )  # hot path: skip re-validation

    forget_scope = (
        Scope.ADMIN if settings.forget_requires_admin else Scope.READ
    )  # admin keys may forget either way

    @app.delete(
        "/v1/profiles/{profile_id}", status_code=202, tags=["profiles"], dependencies=[require(forget_scope)]
    )
    def forget_profile(profile_id: str, store: RedisProfileStore = Depends(store_)) -> dict[str, Any]:
        """Forget a user: profile, decisions and identity links now; archive rows in the next batch run."""
        existed = store.forget(profile_id)
        return {"profile_id": profile_id, "forgotten": existed}

    @app.get("/v1/schema/event", tags=["collector"])
    def event_schema() -> dict[str, Any]:
        """JSON Schema of one event (the event contract)."""
        return event_json_schema()

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> JSONResponse:
        """Liveness and dependencies: 200 when Redis and the broker answer, else 503."""
        checks = {
            "redis": await run_in_threadpool(_redis_ok, services["store"]),
            "broker": await run_in_threadpool(services["producer"].broker_reachable, 2.0),
        }
        healthy = all(checks.values())
        return JSONResponse(
            {"status": "ok" if healthy else "degraded", **checks}, status_code=200 if healthy else 503
        )

    @app.get("/metrics", tags=["operations"])
    def prometheus_metrics() -> Response:
        """Prometheus metrics."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    original_openapi = app.openapi

    def openapi_with_event_schema() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = original_openapi()  # FastAPI caches it in app.openapi_schema
            event = {k: v for k, v in event_json_schema().items() if k not in ("$schema", "$id")}
            schema.setdefault("components", {}).setdefault("schemas", {})["Event"] = event
        return app.openapi_schema

    app.openapi = openapi_with_event_schema  # type: ignore[method-assign]
    return app


def _redis_ok(store: RedisProfileStore) -> bool:
    try:
        return bool(store.client.ping())
    except redis.RedisError:
        return False


def _segment_key(request: Request, payload: dict[str, Any]) -> str | None:
    """Write key of a Segment call: Basic-auth user name, else writeKey in the body, else Pulse's headers."""
    authorization = request.headers.get("authorization", "")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "basic" and value:
        try:
            user = base64.b64decode(value.strip()).decode().split(":", 1)[0]
        except (ValueError, UnicodeDecodeError):
            raise HTTPException(401, "malformed Basic authorization") from None
        if user:
            return user
    if isinstance(payload.get("writeKey"), str) and payload["writeKey"]:
        return payload["writeKey"]
    return key_from_headers(request.headers.get("x-pulse-key"), authorization)


def _gunzip_capped(body: bytes, limit: int) -> bytes:
    """Decompress a gzip body, answering 413 past ``limit`` bytes (so a gzip bomb costs nothing)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise HTTPException(400, f"invalid gzip body: {exc}") from None
    if len(data) > limit:
        raise HTTPException(413, f"decompressed body larger than {limit} bytes")
    return data


async def _read_capped_body(request: Request, limit: int) -> bytes:
    """Read the body, answering 413 as soon as it exceeds ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        metrics.REQUESTS.labels("413").inc()
        raise HTTPException(413, f"body larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            metrics.REQUESTS.labels("413").inc()
            raise HTTPException(413, f"body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
