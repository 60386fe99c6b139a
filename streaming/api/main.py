"""Run the collector/API with uvicorn (`pulse run api`)."""

from __future__ import annotations

import uvicorn

from orchestration.settings import PulseSettings
from streaming.api.app import create_app


def main(settings: PulseSettings | None = None) -> None:
    settings = settings or PulseSettings()
    app = create_app(settings)
    uvicorn.run(app, host=settings.api_host, port=settings.api_port, log_level="info", access_log=False)
