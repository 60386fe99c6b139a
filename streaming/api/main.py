"""Run the collector/API with uvicorn (`pulse run api`)."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from core.settings import PulseSettings
from streaming.api.app import create_app


def build_app() -> FastAPI:
    """App factory for uvicorn worker processes: each reads the same PULSE_* settings."""
    return create_app(PulseSettings())


def main(settings: PulseSettings | None = None) -> None:
    settings = settings or PulseSettings()
    options = {"host": settings.api_host, "port": settings.api_port, "log_level": "info", "access_log": False}
    if settings.api_workers > 1:
        uvicorn.run("streaming.api.main:build_app", factory=True, workers=settings.api_workers, **options)
    else:
        uvicorn.run(create_app(settings), **options)
