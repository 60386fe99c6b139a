# One image for every Pulse app; the app is chosen by argument:
#   docker run pulse run api | run profile-app | run archiver      (default target: app)
# and one for Dagster (webserver, daemon, code server, run workers): docker build --target dagster
# Not built on our CI machines (no Docker engine there); tests check that it matches the repo.

FROM python:3.11.7-slim-bookworm AS build
ENV UV_VERSION=0.13.9 UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
# --no-dev: the Python SDK (sdk/python, its own distribution) is a dev dependency only, not in the image.
RUN uv sync --frozen --no-dev --no-install-project
COPY core ./core
COPY orchestration ./orchestration
COPY streaming ./streaming
COPY assets ./assets
COPY enrichment ./enrichment
COPY quality ./quality
COPY data ./data
COPY workspace.yaml ./
RUN uv sync --frozen --no-dev --no-editable

# Deployed Dagster keeps runs in Postgres and may launch runs as Kubernetes jobs. uv.lock does
# not carry these (local `pulse up` uses SQLite), so they are pinned here to dagster 1.13.27.
FROM build AS dagster-build
RUN uv pip install --python /app/.venv/bin/python \
    "dagster-postgres==0.29.27" "psycopg2-binary==2.9.13" "dagster-k8s==0.29.27"

FROM python:3.11.7-slim-bookworm AS runtime
# Mount points exist and belong to pulse, so new named volumes there are writable by it.
RUN useradd --create-home --uid 10001 pulse && mkdir -p /data/archive /opt/dagster/dagster_home \
    && chown -R pulse /data /opt/dagster/dagster_home
WORKDIR /app
ENV PATH=/app/.venv/bin:$PATH \
    PULSE_DATA_DIR=/data \
    PULSE_API_HOST=0.0.0.0 \
    PYTHONUNBUFFERED=1

# Dagster's Helm chart and run launchers pass whole commands ("dagster api grpc ..."), so no
# entrypoint here. DAGSTER_HOME is the chart's default; compose mounts deploy/dagster/dagster.yaml there.
FROM runtime AS dagster
COPY --from=dagster-build --chown=pulse /app /app
ENV DAGSTER_HOME=/opt/dagster/dagster_home
USER pulse
EXPOSE 3000 3030
CMD ["dagster-webserver", "-w", "/app/workspace.yaml", "-h", "0.0.0.0", "-p", "3000"]

# Last stage, so the default target: the API, the profile app and the archiver.
FROM runtime AS app
COPY --from=build --chown=pulse /app /app
USER pulse
EXPOSE 8080
# The API answers /healthz; compose and Kubernetes override the check for the other apps.
HEALTHCHECK --interval=15s --timeout=5s --retries=3 \
    CMD python -c "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status != 200)"
ENTRYPOINT ["pulse"]
CMD ["run", "api"]
