"""`pulse doctor`: check each service Pulse needs and say how to fix what is wrong."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import httpx
import redis
from confluent_kafka.admin import AdminClient

from core import service_registry
from core.kafka_config import client_config
from core.redis_client import redis_from_url
from core.settings import PulseSettings
from core.topics import topic_specs
from streaming.profile_app.sink import HEARTBEAT_KEY

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def run_checks(settings: PulseSettings) -> list[Check]:
    """Run every check; later checks are skipped (and say so) when what they need is down."""
    checks: list[Check] = []
    try:
        brokers = service_registry.kafka_brokers(settings)
    except service_registry.ServiceNotConfigured as exc:
        checks.append(Check("broker", False, "no address", str(exc)))
        brokers = None
    if brokers:
        checks.extend(_check_broker(settings, brokers))
    try:
        url = service_registry.redis_url(settings)
    except service_registry.ServiceNotConfigured as exc:
        checks.append(Check("redis", False, "no address", str(exc)))
        url = None
    if url:
        checks.extend(_check_redis(url))
    checks.append(_check_rules(settings))
    checks.append(
        _check_http(
            "api",
            service_registry.api_url(settings) + "/healthz",
            "start `pulse up` or `pulse run api`; see logs in " + str(settings.data_path / "logs"),
        )
    )
    dagster = service_registry.read_services(settings.services_file).get("dagster_url")
    if dagster:
        checks.append(
            _check_http(
                "dagster", f"{dagster}/server_info", f"see {settings.data_path / 'logs' / 'dagster.log'}"
            )
        )
    else:
        checks.append(Check("dagster", True, "not started by `pulse up` (--no-dagster or not running)"))
    return checks


def _check_broker(settings: PulseSettings, brokers: str) -> list[Check]:
    admin = AdminClient({**client_config(settings, brokers), "socket.timeout.ms": 3000})
    try:
        metadata = admin.list_topics(timeout=5)
    except Exception as exc:  # noqa: BLE001 - report any failure
        return [
            Check(
                "broker",
                False,
                f"{brokers} does not answer: {exc}",
                "is the broker running? check PULSE_KAFKA_BROKERS and PULSE_KAFKA_CONFIG",
            )
        ]
    checks = [Check("broker", True, f"{brokers} answers ({len(metadata.brokers)} broker(s))")]
    for spec in topic_specs(settings):
        topic = metadata.topics.get(spec.name)
        if topic is None:
            checks.append(
                Check(
                    f"topic {spec.name}",
                    False,
                    "missing",
                    "run `pulse up` once, or create it with explicit retention.ms/retention.bytes",
                )
            )
        else:
            checks.append(Check(f"topic {spec.name}", True, f"{len(topic.partitions)} partition(s)"))
    return checks


#: Profile updates are a Redis function (FUNCTION LOAD / FCALL).
MIN_REDIS_MAJOR = 7


def server_version(info: dict) -> str | None:
    """``redis_version`` of an INFO server reply; the lowest over a cluster client's per-node reply."""
    if "redis_version" in info:
        return str(info["redis_version"])
    versions = [
        str(node["redis_version"])
        for node in info.values()
        if isinstance(node, dict) and "redis_version" in node
    ]
    return (
        min(versions, key=lambda v: tuple(int(x) for x in v.split(".") if x.isdigit())) if versions else None
    )


def _check_redis(url: str) -> list[Check]:
    try:
        client = redis_from_url(
            url, socket_timeout=3, socket_connect_timeout=3
        )  # a cluster client connects here
        client.ping()
        heartbeat = client.get(HEARTBEAT_KEY)
        version = server_version(client.info("server"))
    except redis.RedisError as exc:
        return [
            Check(
                "redis",
                False,
                f"{service_registry.redact(url)} does not answer: {type(exc).__name__}",
                "is Redis running? check PULSE_REDIS_URL",
            )
        ]
    major = int(version.split(".")[0]) if version and version.split(".")[0].isdigit() else None
    if major is not None and major < MIN_REDIS_MAJOR:
        return [
            Check(
                "redis",
                False,
                f"{service_registry.redact(url)} runs Redis {version}",
                f"use Redis or Valkey {MIN_REDIS_MAJOR}.0 or newer: profile updates are a Redis function",
            )
        ]
    checks = [
        Check("redis", True, f"{service_registry.redact(url)} answers (Redis {version or 'version unknown'})")
    ]
    if heartbeat is None:
        checks.append(
            Check(
                "profile app",
                False,
                "has never started against this Redis",
                "start `pulse up` or `pulse run profile-app`; see its log",
            )
        )
    else:
        age = time.time() - int(heartbeat) / 1000
        checks.append(
            Check(
                "profile app",
                True,
                f"last heartbeat {age:.0f}s ago (written at start-up and with each batch)",
            )
        )
    return checks


def _check_rules(settings: PulseSettings) -> Check:
    """The rule file the profile app loads (an invalid one is ignored there, keeping the old rules)."""
    from streaming.rules.follower import DEFAULT_RULES_FILE
    from streaming.rules.loader import RuleFileError, load_rules

    path = settings.rules_file or DEFAULT_RULES_FILE
    try:
        ruleset = load_rules(path)
    except RuleFileError as exc:
        return Check(
            "rules",
            False,
            f"{path}: {len(exc.problems)} problem(s): {exc.problems[0]}",
            f"run `pulse rules check {path}` and fix what it lists",
        )
    return Check("rules", True, f"{len(ruleset)} rules in {path}")


def _check_http(name: str, url: str, fix: str) -> Check:
    try:
        response = httpx.get(url, timeout=3)
    except httpx.HTTPError as exc:
        return Check(name, False, f"{url} unreachable: {exc}", fix)
    if response.status_code >= 400:
        return Check(name, False, f"{url} answered {response.status_code}: {response.text[:200]}", fix)
    return Check(name, True, f"{url} answered {response.status_code}")
