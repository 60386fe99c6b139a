"""Find the services a Pulse command talks to: environment first, then what `pulse up` recorded.

`pulse up` writes ``$PULSE_DATA_DIR/services.json`` with the addresses of the embedded
broker and Redis it started, so any other `pulse` command with the same data directory
finds them.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from core.settings import PulseSettings

logger = logging.getLogger(__name__)


class ServiceNotConfigured(RuntimeError):
    """No address is configured or recorded for a service; the message says how to fix it."""


def write_services(path: Path, services: dict[str, Any]) -> None:
    """Atomically record service addresses (and the recording process id), readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # URLs may carry passwords
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps({**services, "pid": os.getpid()}, indent=2))
    tmp.replace(path)


def redact(value: Any) -> Any:
    """A URL with its password replaced by ***, for printing; anything else unchanged."""
    if not isinstance(value, str) or "://" not in value or "@" not in value:
        return value
    scheme, rest = value.split("://", 1)
    credentials, _, host = rest.rpartition("@")
    user, has_password, _ = credentials.partition(":")
    return f"{scheme}://{user}{':***' if has_password else ''}@{host}"


def read_services(path: Path) -> dict[str, Any]:
    """Addresses recorded by a running `pulse up`, or {} when none is running."""
    try:
        services = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    pid = services.get("pid")
    if not isinstance(pid, int) or not _pid_alive(pid):
        return {}
    return services


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _resolve(settings: PulseSettings, configured: str | None, key: str, variable: str) -> str:
    if configured:
        return configured
    recorded = read_services(settings.services_file).get(key)
    if recorded:
        return str(recorded)
    raise ServiceNotConfigured(
        f"No {key.replace('_', ' ')} configured: set {variable}, or start `pulse up` "
        f"with PULSE_DATA_DIR={settings.data_path} so its embedded services are recorded "
        f"in {settings.services_file}."
    )


def kafka_brokers(settings: PulseSettings) -> str:
    """Bootstrap servers: PULSE_KAFKA_BROKERS, else the broker `pulse up` started."""
    return _resolve(settings, settings.kafka_brokers, "kafka_brokers", "PULSE_KAFKA_BROKERS")


def redis_url(settings: PulseSettings) -> str:
    """Redis URL: PULSE_REDIS_URL, else the server `pulse up` started."""
    return _resolve(settings, settings.redis_url, "redis_url", "PULSE_REDIS_URL")


def api_url(settings: PulseSettings) -> str:
    """Base URL of the collector/API."""
    recorded = read_services(settings.services_file).get("api_url")
    return str(recorded or f"http://{settings.api_host}:{settings.api_port}")
