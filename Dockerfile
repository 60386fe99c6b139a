# One image for every Pulse app; the app is chosen by argument:
#   docker run pulse run api | run profile-app | run archiver | dagster ... (see deploy/compose.yaml)
# Not built on our CI machines (no Docker engine there); tests check that it matches the repo.

FROM python:3.11.7-slim-bookworm AS build
ENV UV_VERSION=0.13.9 UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY orchestration ./orchestration
COPY streaming ./streaming
COPY assets ./assets
COPY enrichment ./enrichment
COPY quality ./quality
COPY data ./data
COPY workspace.yaml ./
RUN uv sync --frozen --no-dev --no-editable

FROM python:3.11.7-slim-bookworm
RUN useradd --create-home --uid 10001 pulse && mkdir -p /data && chown pulse /data
WORKDIR /app
COPY --from=build --chown=pulse /app /app
ENV PATH=/app/.venv/bin:$PATH \
    PULSE_DATA_DIR=/data \
    PULSE_API_HOST=0.0.0.0 \
    PYTHONUNBUFFERED=1
USER pulse
EXPOSE 8080 3000
# The API answers /healthz; compose overrides the check for the other apps.
HEALTHCHECK --interval=15s --timeout=5s --retries=3 \
    CMD python -c "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status != 200)"
ENTRYPOINT ["pulse"]
CMD ["run", "api"]
