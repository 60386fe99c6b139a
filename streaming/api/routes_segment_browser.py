"""Segment's browser library (analytics-next) by host change: its settings and its compact routes.

analytics-next loads ``GET {cdnURL}/v1/projects/{writeKey}/settings``, then posts each call to
``{apiHost}/t`` (track), ``/p``, ``/i``, ``/a``, ``/g``, ``/s`` as JSON sent as ``text/plain``
with the write key in the body, or a batch to ``/b`` (its ``batching`` delivery strategy). The
calls take the Segment routes' path (``routes_segment.segment_call``); CORS is ``browser.py``'s.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse

from core.settings import PulseSettings
from streaming.api.auth import Scope, grants
from streaming.api.routes_segment import segment_call
from streaming.api.segment_settings import browser_settings, split_api_url
from streaming.api.services import services_of

#: analytics-next's path letter (the call type's first letter) -> the Segment call.
COMPACT_CALLS = {
    "t": "track",
    "p": "page",
    "i": "identify",
    "a": "alias",
    "g": "group",
    "s": "screen",
}
SETTINGS_PATH = "/v1/projects/{write_key}/settings"


def _compact_endpoint(call: str | None) -> Callable[[Request], Awaitable[JSONResponse]]:
    # No docstring: it would become the OpenAPI description of every call.
    async def compact(request: Request) -> JSONResponse:
        return await segment_call(request, call)

    return compact


def segment_browser_router(settings: PulseSettings) -> APIRouter:
    """The settings endpoint and the compact routes; raises ``SegmentApiUrlError`` on a bad
    PULSE_SEGMENT_API_URL, so the API does not start with a setting it could not serve."""
    configured = settings.segment_api_url
    if configured:
        split_api_url(configured)
    router = APIRouter()

    for letter, call in COMPACT_CALLS.items():
        router.add_api_route(
            f"/v1/{letter}",
            _compact_endpoint(call),
            methods=["POST"],
            tags=["segment"],
            summary=f"Segment browser library {call} call (analytics-next)",
        )
    router.add_api_route(
        "/v1/b",
        _compact_endpoint(None),
        methods=["POST"],
        tags=["segment"],
        summary="Segment browser library batch (analytics-next's batching delivery strategy)",
    )

    @router.get(SETTINGS_PATH, tags=["segment"])
    def segment_settings(request: Request, write_key: str) -> dict[str, Any]:
        """Settings for Segment's browser library: Pulse as its only destination (docs/segment.md).

        Answers 404 for a key that is not a write key, as for any source that does not exist.
        """
        if not grants(services_of(request).keys.scopes_of(write_key), Scope.WRITE):
            raise HTTPException(404, "no source with this write key: use a Pulse write key")
        api_url = configured or str(request.base_url).rstrip("/") + "/v1"
        return browser_settings(write_key, api_url)

    return router
