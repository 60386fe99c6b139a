"""The HTTP side of ingestion, shared by the collector and the Segment routes: capped bodies, rate
limits, and events handed durably to the broker before the answer."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import HTTPException, Request

from core.time_format import now_iso
from quality.event_contract import CONSENT_PURPOSES
from streaming.api import metrics
from streaming.api.delivery import DeliveryFailed
from streaming.api.ingest import IngestPlan, plan_ingest
from streaming.api.request_enrich import Enrich
from streaming.api.services import ApiServices

logger = logging.getLogger(__name__)


async def read_capped_body(request: Request, limit: int) -> bytes:
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


async def accept_events(
    services: ApiServices, key: str, events: list[Any], source: str, request: Request | None = None
) -> IngestPlan:
    """Rate-limit, enrich from ``request``, validate, and hand events to the broker; raise the HTTP
    error on failure."""
    if not services.limiter.allow(key, len(events)):
        metrics.REQUESTS.labels("429").inc()
        raise HTTPException(429, "rate limit exceeded for this key", headers={"Retry-After": "1"})
    settings = services.settings
    plan = plan_ingest(
        events,
        received_at=now_iso(),
        events_topic=settings.topic_events,
        dlq_topic=settings.topic_dlq,
        source=source,
        anonymize=services.anonymizer.scrub,
        enrich=_request_enrichment(services, request),
    )
    try:
        await services.producer.send(plan.records)
    except DeliveryFailed as exc:
        logger.warning("503: %s", exc)
        metrics.REQUESTS.labels("503").inc()
        raise HTTPException(
            503, f"events could not be stored, retry: {exc}", headers={"Retry-After": "1"}
        ) from None
    metrics.EVENTS_ACCEPTED.inc(plan.accepted)
    metrics.EVENTS_REJECTED.inc(len(plan.rejected))
    for reason, count in plan.bots.items():
        metrics.BOT_EVENTS.labels(reason).inc(count)
    for purpose, count in plan.consent_refused.items():
        if (
            purpose in CONSENT_PURPOSES
        ):  # other purposes are the sender's; a label each would not stay bounded
            metrics.CONSENT_REFUSED_EVENTS.labels(purpose).inc(count)
    metrics.REQUESTS.labels("202").inc()
    return plan


def _request_enrichment(services: ApiServices, request: Request | None) -> Enrich:
    if request is None:
        return _unchanged
    peer = request.client.host if request.client else None
    return services.enricher.for_request(request.headers, request.query_params, peer)


def _unchanged(obj: Any) -> Any:
    return obj
