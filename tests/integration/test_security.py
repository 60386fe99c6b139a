"""A real `pulse run api` process: keys rotated by rewriting PULSE_KEYS_FILE, scopes, IPs
truncated before Kafka, clean logs.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from core.settings import PulseSettings
from streaming.api.auth import hash_key
from tests.integration.test_collector_api import read_topic

pytestmark = pytest.mark.integration

ENV_WRITE, ENV_READ = "env-write-key-1", "env-read-key-1"
FILE_WRITE_OLD, FILE_WRITE_NEW, FILE_ADMIN = "file-write-old-1", "file-write-new-1", "file-admin-1"


def keys_text(*entries: tuple[str, str, list[str]]) -> str:
    return yaml.safe_dump({"keys": [{"name": n, "hash": hash_key(k), "scopes": s} for n, k, s in entries]})


def replace_file(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.fixture
def settings(settings: PulseSettings, tmp_path: Path) -> PulseSettings:
    """The shared test settings with a hashed env write key, a plain env read key and a keys file."""
    keys_file = tmp_path / "keys.yaml"
    keys_file.write_text(keys_text(("shop-web", FILE_WRITE_OLD, ["write"]), ("ops", FILE_ADMIN, ["admin"])))
    return settings.model_copy(
        update={
            "write_keys": [hash_key(ENV_WRITE)],
            "read_keys": [ENV_READ],
            "keys_file": keys_file,
            "keys_refresh_seconds": 0.2,
            "ip_anonymization": "truncate",
        }
    )


def event(**metadata) -> dict:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "page_view",
        "user_id": f"sec-{uuid.uuid4().hex[:6]}",
        "timestamp": "2024-04-25T14:23:05.123Z",
        "metadata": {"category": "shoes", **metadata},
    }


def status(client: httpx.Client, key: str) -> int:
    return client.post("/v1/events", json=event(), headers={"X-Pulse-Key": key}).status_code


def wait_for(check, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def test_keys_file_rotation_without_restart(settings, pulse_apps):
    api = pulse_apps("api")
    keys_file = settings.keys_file
    with httpx.Client(base_url=f"http://{settings.api_host}:{settings.api_port}", timeout=10) as client:
        assert status(client, ENV_WRITE) == 202  # a sha256: entry of PULSE_WRITE_KEYS
        assert status(client, FILE_WRITE_OLD) == 202
        assert status(client, FILE_ADMIN) == 403  # admin is not write

        # Rotation, step 1: add the new key next to the old one; both work.
        replace_file(
            keys_file,
            keys_text(
                ("shop-web", FILE_WRITE_OLD, ["write"]),
                ("shop-web-2", FILE_WRITE_NEW, ["write"]),
                ("ops", FILE_ADMIN, ["admin"]),
            ),
        )
        assert wait_for(lambda: status(client, FILE_WRITE_NEW) == 202)
        assert status(client, FILE_WRITE_OLD) == 202
        # Step 2: clients moved; remove the old key.
        replace_file(
            keys_file, keys_text(("shop-web-2", FILE_WRITE_NEW, ["write"]), ("ops", FILE_ADMIN, ["admin"]))
        )
        assert wait_for(lambda: status(client, FILE_WRITE_OLD) == 401)
        assert status(client, FILE_WRITE_NEW) == 202 and status(client, ENV_WRITE) == 202

        # A broken file (half written in place) keeps the keys loaded before it, and says so.
        keys_file.write_text("keys:\n- {name: half, hash: sha256:")
        assert wait_for(  # the file is checked when a key is (at most every PULSE_KEYS_REFRESH_SECONDS)
            lambda: (
                status(client, FILE_WRITE_NEW) == 202
                and "keeping the 2 key(s) loaded from it before" in api.log_path.read_text()
            )
        )
        assert status(client, FILE_WRITE_OLD) == 401
        # Fixed again: loaded.
        replace_file(keys_file, keys_text(("ops", FILE_ADMIN, ["admin", "write"])))
        assert wait_for(lambda: status(client, FILE_ADMIN) == 202)
        assert status(client, FILE_WRITE_NEW) == 401

    log = api.log_path.read_text()
    assert "reloaded 1 key(s) (1 write, 0 read, 1 admin: ops)" in log
    for secret in (ENV_WRITE, ENV_READ, FILE_WRITE_OLD, FILE_WRITE_NEW, FILE_ADMIN, hash_key(FILE_ADMIN)):
        assert secret not in log


def test_scopes_and_ip_truncation_through_a_real_api(settings, pulse_apps):
    api = pulse_apps("api")
    base = f"http://{settings.api_host}:{settings.api_port}"
    valid = event(ip="203.0.113.77")
    invalid = {**event(ip="2001:db8:1:2:3:4:5:6"), "event_type": ""}
    with httpx.Client(base_url=base, timeout=10) as client:
        answer = client.post(
            "/v1/events", json={"events": [valid, invalid]}, headers={"X-Pulse-Key": ENV_WRITE}
        )
        assert answer.status_code == 202 and answer.json()["accepted"] == 1

        read, admin, write = ({"Authorization": f"Bearer {k}"} for k in (ENV_READ, FILE_ADMIN, ENV_WRITE))
        assert client.get("/v1/profiles/nobody", headers=read).status_code == 404  # authorized, unknown id
        assert client.get("/v1/profiles/nobody", headers=admin).status_code == 404
        assert client.get("/v1/decisions/nobody", headers=admin).status_code == 404
        assert client.get("/v1/profiles/nobody", headers=write).status_code == 403
        assert (
            client.delete("/v1/profiles/nobody", headers=read).status_code == 202
        )  # the contract: read keys forget
        assert client.delete("/v1/profiles/nobody", headers=admin).status_code == 202
        assert client.delete("/v1/profiles/nobody", headers=write).status_code == 403

    [stored] = read_topic(settings.kafka_brokers, settings.topic_events, 1)
    assert json.loads(stored.value())["metadata"]["ip"] == "203.0.113.0"
    [dead] = read_topic(settings.kafka_brokers, settings.topic_dlq, 1)
    assert json.loads(dead.value())["metadata"]["ip"] == "2001:db8:1::"

    log = api.log_path.read_text()
    for secret in ("203.0.113.77", "2001:db8:1:2:3:4:5:6", ENV_WRITE, ENV_READ, FILE_ADMIN):
        assert secret not in log
