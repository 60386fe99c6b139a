"""The collector: ``POST /v1/events``, one event or a batch, durably in Kafka before the 202."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse

from quality.event_contract import EventContractError, decode_json
from streaming.api import metrics
from streaming.api.auth import Scope
from streaming.api.dependencies import require
from streaming.api.ingest import (
    MAX_BATCH_EVENTS,
    MAX_BODY_BYTES,
    BadRequestBody,
    BatchTooLarge,
    events_of_body,
)
from streaming.api.intake import accept_events, read_capped_body
from streaming.api.services import services_of

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

router = APIRouter()


@router.post("/v1/events", status_code=202, openapi_extra=EVENTS_BODY_DOC, tags=["collector"])
async def post_events(request: Request, key: str = require(Scope.WRITE)) -> JSONResponse:
    """Accept one event or a batch; valid events are durably in Kafka before the 202."""
    body = await read_capped_body(request, MAX_BODY_BYTES)
    try:
        events = events_of_body(decode_json(body))
    except (EventContractError, BadRequestBody) as exc:
        metrics.REQUESTS.labels("400").inc()
        raise HTTPException(400, str(exc)) from None
    except BatchTooLarge as exc:
        metrics.REQUESTS.labels("413").inc()
        raise HTTPException(413, str(exc)) from None
    plan = await accept_events(services_of(request), key, events, "collector", request)
    return JSONResponse(
        {"accepted": plan.accepted, "rejected": [asdict(r) for r in plan.rejected]}, status_code=202
    )
