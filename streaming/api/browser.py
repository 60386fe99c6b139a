"""Browser side of the API: the tracker script, CORS for the collector, and the demo shop.

The demo shop (``/demo``) is mounted only in local dev (``PULSE_DEV_MODE``) or with
``PULSE_DEMO_SHOP=true``: it embeds a write key in the page and shows decisions to anyone who
knows an anonymous id, which is fine on a laptop and not on a production host.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from itertools import islice
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from core.settings import PulseSettings
from enrichment.catalog import SAMPLE_CATALOG, read_catalog_csv
from streaming.api.auth import KeyRing
from streaming.api.services import services_of

STATIC = Path(__file__).resolve().parent / "static"
DEMO_ASSETS = {"demo.js": "text/javascript; charset=utf-8", "demo.css": "text/css; charset=utf-8"}
DEMO_PRODUCTS_PER_CATEGORY = 5

#: Endpoints a browser on another origin may call: event ingestion, the tracker itself, and
#: Segment's browser library (its compact routes; its settings, see ``is_collector_path``).
#: Profiles and decisions never get CORS headers, so a web page cannot read them cross-origin.
COLLECTOR_PATHS = frozenset(
    {
        "/v1/events",
        "/v1/batch",
        "/v1/track",
        "/v1/page",
        "/v1/screen",
        "/v1/identify",
        "/v1/alias",
        "/v1/group",
        "/v1/tracker.js",
        *(f"/v1/{letter}" for letter in "tpiagsb"),
    }
)
SEGMENT_SETTINGS_PREFIX, SEGMENT_SETTINGS_SUFFIX = "/v1/projects/", "/settings"


def is_collector_path(path: str) -> bool:
    """A path that gets CORS: ``COLLECTOR_PATHS`` and ``/v1/projects/{writeKey}/settings``."""
    if path in COLLECTOR_PATHS:
        return True
    if path.startswith(SEGMENT_SETTINGS_PREFIX) and path.endswith(SEGMENT_SETTINGS_SUFFIX):
        key = path[len(SEGMENT_SETTINGS_PREFIX) : -len(SEGMENT_SETTINGS_SUFFIX)]
        return bool(key) and "/" not in key
    return False


class DemoShopError(RuntimeError):
    """Start-up error: the demo shop is on but cannot work."""


class CollectorCORS:
    """Starlette's CORSMiddleware, applied to the collector paths only."""

    def __init__(self, app: ASGIApp, *, origins: list[str]) -> None:
        self.app = app
        self.cors = CORSMiddleware(
            app,
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            # X-Retry-Count: analytics-next numbers its retries with it.
            allow_headers=[
                "Content-Type",
                "Content-Encoding",
                "X-Pulse-Key",
                "Authorization",
                "X-Retry-Count",
            ],
            expose_headers=["Retry-After"],
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and is_collector_path(scope["path"]):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def cors_origins(settings: PulseSettings) -> list[str]:
    """Configured origins; in local dev without any, the API's own origin (127.0.0.1 and localhost)."""
    if settings.cors_origins:
        return list(settings.cors_origins)
    if settings.dev_mode:
        hosts = {settings.api_host, "127.0.0.1", "localhost"} - {"0.0.0.0", "::"}
        return sorted(f"http://{host}:{settings.api_port}" for host in hosts)
    return []


def add_cors(app: FastAPI, settings: PulseSettings) -> None:
    """CORS for the collector per ``PULSE_CORS_ORIGINS``; nothing when no origin is allowed."""
    origins = cors_origins(settings)
    if origins:
        app.add_middleware(CollectorCORS, origins=origins)


def demo_shop_enabled(settings: PulseSettings) -> bool:
    return settings.dev_mode or settings.demo_shop


def demo_catalog(
    path: Path = SAMPLE_CATALOG, per_category: int = DEMO_PRODUCTS_PER_CATEGORY
) -> dict[str, list[dict[str, Any]]]:
    """A few products of each category of the catalog CSV, grouped by category."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in read_catalog_csv(path):
        grouped.setdefault(row["category"], []).append(row)
    return {
        category: [_product(row) for row in islice(rows, per_category)]
        for category, rows in sorted(grouped.items())
    }


def _product(row: dict[str, str]) -> dict[str, Any]:
    price = row.get("price")
    return {
        "product_id": row["product_id"],
        "name": row.get("name") or row["product_id"],
        "category": row["category"],
        "brand": row.get("brand") or "",
        "price": float(price) if price else None,
        "currency": row.get("currency") or "USD",
    }


def banner_decisions(decisions: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Only what a banner shows: the demo endpoint is unauthenticated, so it exposes no more."""
    banners = []
    for decision in decisions:
        if decision.get("action") != "banner":
            continue
        params = decision.get("params") if isinstance(decision.get("params"), dict) else {}
        banners.append(
            {
                "rule": decision.get("rule"),
                "action": "banner",
                "message": decision.get("message"),
                "params": {k: v for k, v in params.items() if k == "category"},
            }
        )
    return banners


def demo_page(write_key: str) -> str:
    """The demo shop page with its tracker configuration (a write key: browsers may hold one)."""
    config = json.dumps({"writeKey": write_key}).replace("<", "\\u003c")
    return (STATIC / "demo.html").read_text().replace("{{PULSE_CONFIG}}", config)


def browser_router(settings: PulseSettings) -> APIRouter:
    """``GET /v1/tracker.js`` always; the demo shop when enabled (see module docstring)."""
    router = APIRouter()
    tracker = (STATIC / "tracker.js").read_bytes()

    @router.get("/v1/tracker.js", tags=["collector"], response_class=Response)
    def tracker_js() -> Response:
        """The browser tracker (docs/tracker.md)."""
        return Response(
            tracker,
            media_type="text/javascript; charset=utf-8",
            headers={"Cache-Control": "public, max-age=300"},
        )

    if not demo_shop_enabled(settings):
        return router

    write_keys = KeyRing.from_settings(settings).write
    if not write_keys:
        raise DemoShopError(
            "the demo shop sends events from the browser: set PULSE_WRITE_KEYS or turn PULSE_DEMO_SHOP off"
        )
    write_key = write_keys[0]
    catalog = demo_catalog()
    assets = {name: (STATIC / name).read_bytes() for name in DEMO_ASSETS}

    @router.get("/demo", tags=["demo"], response_class=HTMLResponse)
    def demo_shop() -> HTMLResponse:
        """Demo shop: a small catalogue that sends events with the tracker and shows banners."""
        return HTMLResponse(demo_page(write_key), headers={"Cache-Control": "no-store"})

    @router.get("/demo/static/{name}", tags=["demo"], include_in_schema=False)
    def demo_asset(name: str) -> Response:
        if name not in assets:
            raise HTTPException(404, f"no demo asset {name!r}")
        return Response(assets[name], media_type=DEMO_ASSETS[name], headers={"Cache-Control": "no-cache"})

    @router.get("/demo/catalog", tags=["demo"])
    def demo_products() -> dict[str, Any]:
        """Products of the demo shop, grouped by category."""
        return {"categories": catalog}

    @router.get("/demo/decisions/{profile_id}", tags=["demo"])
    async def demo_decisions(request: Request, profile_id: str) -> dict[str, Any]:
        """Banner decisions of a profile, for the demo page (browsers cannot hold a read key)."""
        decisions = await run_in_threadpool(services_of(request).store.get_decisions, profile_id)
        return {"profile_id": profile_id, "decisions": banner_decisions(decisions)}

    return router
