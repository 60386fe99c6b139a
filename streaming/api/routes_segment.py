"""Segment's HTTP API (``/v1/batch``, ``/v1/track``...), so Segment's and RudderStack's SDKs send here."""

from __future__ import annotations

import base64
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import msgspec
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse

from quality.event_contract import MAX_EVENT_BYTES, EventContractError, decode_json
from streaming.api.auth import Scope, grants, key_from_headers
from streaming.api.ingest import Unmappable
from streaming.api.intake import accept_events, read_capped_body
from streaming.api.segment import SegmentMappingError, segment_to_event
from streaming.api.services import services_of

SEGMENT_MAX_BODY_BYTES = 500 * 1024  # Segment's own batch limit
SINGLE_CALLS = ("track", "page", "screen", "identify", "alias", "group")

_encoder = msgspec.json.Encoder()

router = APIRouter()


@router.post("/v1/batch", tags=["segment"])
async def segment_batch(request: Request) -> JSONResponse:
    """Segment HTTP API batch: {"batch": [messages], "sentAt": ...}; Basic auth with the write key as user."""
    return await segment_call(request, None)


def _single_call_endpoint(call: str) -> Callable[[Request], Awaitable[JSONResponse]]:
    # No docstring: it would become the OpenAPI description of every call.
    async def single(request: Request) -> JSONResponse:
        return await segment_call(request, call)

    return single


for _call in SINGLE_CALLS:
    router.add_api_route(
        f"/v1/{_call}",
        _single_call_endpoint(_call),
        methods=["POST"],
        tags=["segment"],
        summary=f"Segment {_call} call",
    )


async def segment_call(request: Request, call: str | None) -> JSONResponse:
    """One Segment request: ``call`` names a single-message route, ``None`` is a batch."""
    body = await read_capped_body(request, SEGMENT_MAX_BODY_BYTES * 4)
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
    services = services_of(request)
    key = _segment_key(request, payload)
    if key is None:
        raise HTTPException(401, "missing write key: send it as the Basic-auth user name or as writeKey")
    if not grants(services.keys.scopes_of(key), Scope.WRITE):
        raise HTTPException(401, "unknown write key")
    if call is None:
        messages = payload.get("batch")
        if not isinstance(messages, list):
            raise HTTPException(400, '"batch" must be an array of messages')
        if not isinstance(payload.get("sentAt", ""), str | None):
            # It corrects every message's clock: a batch with a nonsense one is refused whole.
            raise HTTPException(400, '"sentAt" must be an ISO 8601 time string')
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
                    track_mapping=services.track_mapping,
                )
            )
        except SegmentMappingError as exc:
            events.append(Unmappable(message, str(exc)))
    plan = await accept_events(services, key, events, "segment", request)
    return JSONResponse(
        {"success": True, "accepted": plan.accepted, "rejected": [asdict(r) for r in plan.rejected]}
    )


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
