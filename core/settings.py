"""Every Pulse setting, read from ``PULSE_*`` environment variables (docs/configuration.md).

This is the one place a setting is defined; ``pulse settings`` prints the effective values.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEV_WRITE_KEY = "dev-write-key"
DEV_READ_KEY = "dev-read-key"
#: Webhook signing secret of local dev (PULSE_DEV_MODE) when PULSE_WEBHOOK_SECRET is unset.
DEV_WEBHOOK_SECRET = "dev-webhook-secret"

#: librdkafka settings that make a local (Tansu) broker fast; production can override them.
LOCAL_CONSUMER_DEFAULTS: dict[str, Any] = {
    # Tansu holds a group join for about half the session timeout, and a SIGKILLed
    # member's partitions move only after its session expires: keep both short.
    "session.timeout.ms": 3000,
    "heartbeat.interval.ms": 500,
    "fetch.wait.max.ms": 5,
}
#: On `pulse up`'s embedded broker (PULSE_BROKER_HOLD_DIR set), on top of LOCAL_CONSUMER_DEFAULTS:
#: the apps join a fresh group after each broker maintenance, and Tansu answers a first JoinGroup
#: after about 2 s with a 3 s session, 1 s with 2 s or less (docs/architecture.md).
EMBEDDED_BROKER_CONSUMER_DEFAULTS: dict[str, Any] = {
    "session.timeout.ms": 2000,
    "heartbeat.interval.ms": 300,
}


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class PulseSettings(BaseSettings):
    """Settings shared by every Pulse process."""

    model_config = SettingsConfigDict(env_prefix="PULSE_", extra="ignore")

    data_dir: Path = Field(
        Path(".pulse"), description="All local state: services, archive, DuckDB, DAGSTER_HOME."
    )
    kafka_brokers: str | None = Field(
        None, description="Kafka bootstrap servers; unset = embedded broker of `pulse up`."
    )
    kafka_config: dict[str, Any] = Field(
        default_factory=dict,
        description='Extra librdkafka settings as JSON, e.g. {"security.protocol": "SASL_SSL"}.',
    )
    redis_url: str | None = Field(
        None,
        description="Redis URL (redis://, rediss://; redis+cluster://h1:p1,h2:p2 for Redis Cluster); "
        "unset = embedded server of `pulse up`.",
    )

    api_host: str = Field("127.0.0.1", description="Address the collector/API listens on.")
    api_port: int = Field(8080, description="Port the collector/API listens on.")
    api_workers: int = Field(
        1,
        ge=1,
        description="Collector/API worker processes (uvicorn); 2+ for more than ~500 reads/s per host.",
    )
    write_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated keys allowed to send events; "
        "an entry sha256:<hex> is a key's hash (`pulse keys hash`).",
    )
    read_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated keys allowed to read and forget profiles; "
        "sha256:<hex> entries as above.",
    )
    admin_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated keys that may do what read keys do "
        "(and forget users when PULSE_FORGET_REQUIRES_ADMIN is on); sha256:<hex> entries as above.",
    )
    keys_file: Path | None = Field(
        None,
        description="JSON or YAML file of hashed keys with scopes (docs/security.md), "
        "added to the keys above; reloaded when it changes.",
    )
    keys_refresh_seconds: float = Field(
        2.0, gt=0, description="How often the API checks the keys file for changes."
    )
    forget_requires_admin: bool = Field(
        False, description="Only admin keys may forget users (DELETE /v1/profiles); off = read keys may too."
    )
    dev_mode: bool = Field(
        False, description="Local dev: missing keys fall back to dev-write-key/dev-read-key."
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated origins whose pages may send events (CORS on the collector only); "
        "unset = none, in dev mode the API's own origin.",
    )
    demo_shop: bool = Field(
        False,
        description="Serve the demo shop at /demo (always on in dev mode); "
        "it embeds a write key: local use only.",
    )
    rate_limit_events_per_second: float = Field(
        50_000,
        gt=0,
        description="Per write key, sustained events/s (across API processes, see PULSE_RATE_LIMIT_SHARED).",
    )
    rate_limit_burst: float = Field(100_000, gt=0, description="Per write key, events allowed in a burst.")
    rate_limit_shared: bool = Field(
        True,
        description="Count rate limits in Redis, shared by every API worker and replica; "
        "false: each process counts apart. "
        "While Redis does not answer, each process counts alone.",
    )
    ip_anonymization: Literal["none", "truncate", "hash"] = Field(
        "truncate",
        description="What the collector does to metadata.ip before Kafka: truncate (IPv4 /24, IPv6 /48), "
        "hash (HMAC with PULSE_IP_HASH_KEY), none.",
    )
    ip_hash_key: SecretStr | None = Field(
        None,
        description="Secret of PULSE_IP_ANONYMIZATION=hash (required then); changing it changes every hash.",
    )
    delivery_timeout_ms: int = Field(
        10_000, description="How long the collector waits for the broker before answering 503."
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated proxy addresses or CIDRs (e.g. 10.0.0.0/8) whose X-Forwarded-For "
        "the collector believes; unset = the client IP is the TCP peer.",
    )
    request_context: Literal["browser", "all", "none"] = Field(
        "browser",
        description="Which requests give events their missing metadata.ip and user_agent from the request: "
        "browser (requests with an Origin header or ?key=), all, none.",
    )
    bot_detection: bool = Field(
        True,
        description="Tag browser events of known bots (user agent, PULSE_BOT_IP_DENYLIST) as such.",
    )
    bot_ip_denylist: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated addresses or CIDRs whose browser events are tagged as bots.",
    )
    bots_in_profiles: bool = Field(
        False,
        description="Let events tagged as bots into profiles and rules "
        "(they are archived and counted either way).",
    )
    personalization_consent: Literal["opt_out", "opt_in"] = Field(
        "opt_out",
        description="Which events may be profiled and ruled on: opt_out = all but those whose "
        "consent.personalization is false; opt_in = only those whose consent.personalization is true. "
        "The others are archived either way.",
    )
    user_agent_cache_size: int = Field(
        8192, ge=0, description="Distinct user agents the collector keeps parsed (LRU); 0 = no cache."
    )

    embedded_broker_max_batches: int = Field(
        2000,
        ge=1,
        description="Embedded broker only: collector requests (about one record batch each) after which "
        "`pulse up` maintains the broker (holds intake for a moment, restarts it empty, offsets continue).",
    )
    broker_hold_wait_seconds: float = Field(
        5.0,
        ge=0,
        description="Embedded broker only: how long the collector holds a request that arrives during a "
        "broker maintenance, answering it once intake is released, before it answers 503 + Retry-After.",
    )
    broker_hold_dir: Path | None = Field(
        None,
        description="Set by `pulse up` for its embedded broker: where it and the collectors coordinate "
        "broker maintenance (docs/architecture.md). Leave unset.",
    )

    segment_mapping_file: Path | None = Field(
        None, description="Segment track-name mapping (JSON); default data/segment/mapping.json."
    )
    segment_api_url: str | None = Field(
        None,
        description="Where Segment's browser library sends (the apiHost of GET /v1/projects/{key}/settings), "
        "e.g. https://pulse.example.com/v1; unset = the URL that settings request came to, plus /v1.",
    )
    dagster_port: int = Field(3000, description="Port of `dagster dev` started by `pulse up`.")

    topic_events: str = Field("pulse.events", description="Events topic.")
    topic_dlq: str = Field("pulse.events.dlq", description="Dead-letter topic for invalid events.")
    dlq_alert_share: float = Field(
        0.05,
        description="The dead_letter_volume check fails when dead letters exceed this share of the "
        "records received in its window (dead letters + valid events).",
    )
    dlq_alert_window_seconds: int = Field(
        3600, description="Window of the dead_letter_volume asset and its check, back from now."
    )
    dlq_alert_minimum: int = Field(
        20, description="Records the window needs before the dead_letter_volume check can fail."
    )
    topic_triggers: str = Field("pulse.triggers", description="Fired decisions.")
    topic_profile_changes: str = Field(
        "pulse.profiles.changes",
        description="Profile changes the profile app writes (segment entered; docs/rules.md).",
    )
    topic_triggers_dlq: str = Field(
        "pulse.triggers.dlq",
        description="Webhook decisions the relay could not deliver (original bytes, reason in headers).",
    )
    topic_partitions: int = Field(
        6, description="Partitions of the topics Pulse creates (embedded broker: 1 unless set)."
    )
    topic_replication_factor: int = Field(1, description="Replication factor of topics Pulse creates.")
    topic_retention_ms: int = Field(7 * 24 * 3600 * 1000, description="retention.ms of topics Pulse creates.")
    topic_retention_bytes: int = Field(
        -1, description="retention.bytes of topics Pulse creates (-1 = unlimited)."
    )

    consumer_group: str = Field("pulse-profile-app", description="Consumer group of the profile app.")
    commit_interval_seconds: float = Field(
        0.01,
        description="Profile app checkpoint interval (Redis writes confirmed, offsets committed) while "
        "no backlog waits; under a backlog it doubles per checkpoint up to 0.5 s, then returns.",
    )
    commit_every: int = Field(
        5000, description="Profile app checkpoints after this many events at the latest."
    )
    dedupe_window_seconds: int = Field(7 * 24 * 3600, description="How long an event_id is remembered.")
    session_timeout_seconds: int = Field(1800, description="Inactivity (event time) that ends a session.")
    archive_dir: Path | None = Field(
        None, description="Event archive (Parquet, dt=/hour=); default $PULSE_DATA_DIR/archive."
    )
    forget_dir: Path | None = Field(
        None,
        description="The durable forget record (suppressions and what each forget run erased), "
        "append-only and fsynced; default $PULSE_DATA_DIR/forget. Every API process and the Dagster "
        "forget run must share it.",
    )
    archiver_consumer_group: str = Field("pulse-archiver", description="Consumer group of the archiver.")
    archive_commit_interval_seconds: float = Field(
        5.0, description="Archiver checkpoint interval: one Parquet file per partition and hour each time."
    )
    alert_webhook_url: str | None = Field(
        None, description="Dagster run failures are posted here (Slack-compatible JSON) when set."
    )
    catalog_refresh_seconds: float = Field(
        5.0, description="How often the profile app checks for a new catalog version."
    )
    rules_file: Path | None = Field(
        None,
        description="Personalization rules (YAML, docs/rules.md); default data/rules/rules.yaml. "
        "Reloaded when it changes.",
    )
    rules_prefilter: bool = Field(
        True,
        description="Let the profile update script drop rules that cannot fire before Python evaluates them "
        "(docs/rules.md); false evaluates every triggering event in Python.",
    )
    rules_refresh_seconds: float = Field(
        2.0, description="How often the profile app checks the rules file for changes."
    )
    relay_consumer_group: str = Field(
        "pulse-relay", description="Consumer group of the webhook relay (`pulse run relay`)."
    )
    webhook_secret: SecretStr | None = Field(
        None,
        description="HMAC-SHA256 key the relay signs webhooks with (Pulse-Signature, docs/security.md); "
        "required by the relay outside dev mode, where dev-webhook-secret is used.",
    )
    webhook_attempts: int = Field(
        6, ge=1, description="Delivery attempts per webhook decision before it is dead-lettered."
    )
    webhook_timeout_seconds: float = Field(
        5.0, gt=0, description="Per-attempt timeout of a webhook POST (connect, read and write)."
    )
    webhook_backoff_seconds: float = Field(
        0.5, gt=0, description="Wait after a webhook's first failed attempt; it doubles per attempt."
    )
    webhook_backoff_max_seconds: float = Field(
        30.0, gt=0, description="Longest wait between webhook attempts, also for a larger Retry-After."
    )
    webhook_concurrency: int = Field(8, ge=1, description="Webhook POSTs the relay runs at once (threads).")
    webhook_max_in_flight: int = Field(
        32,
        ge=1,
        description="Decisions the relay takes per checkpoint; it commits offsets only after all of them "
        "were delivered or dead-lettered.",
    )
    traits_file: Path | None = Field(
        None,
        description="Computed traits (YAML, docs/traits.md); default data/traits/traits.yaml. "
        "Reloaded when it changes; a bad file is rejected whole and the traits loaded before stay.",
    )
    traits_refresh_seconds: float = Field(
        2.0, description="How often the profile app and the API check the traits file for changes."
    )
    identity_max_ids: int = Field(
        100,
        ge=1,
        description="Most user ids one person may merge (identify/alias links between known user ids, "
        "docs/identity.md); links past it are refused, recorded and shown at /v1/profiles/{id}/identity.",
    )
    interest_half_life_days: float = Field(
        7.0, gt=0, description="Half-life of the profile's decayed `interests` (days)."
    )

    _split_keys = field_validator(
        "write_keys",
        "read_keys",
        "admin_keys",
        "cors_origins",
        "trusted_proxies",
        "bot_ip_denylist",
        mode="before",
    )(_split_csv)

    @field_validator("kafka_config", mode="before")
    @classmethod
    def _parse_kafka_config(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    @cached_property
    def data_path(self) -> Path:
        """Absolute data directory."""
        return self.data_dir.expanduser().resolve()

    @property
    def archive_path(self) -> Path:
        """Absolute archive folder."""
        return (self.archive_dir or self.data_path / "archive").expanduser().resolve()

    @property
    def forget_path(self) -> Path:
        """Absolute folder of the durable forget record."""
        return (self.forget_dir or self.data_path / "forget").expanduser().resolve()

    @property
    def services_file(self) -> Path:
        """Where `pulse up` records the addresses of the services it started."""
        return self.data_path / "services.json"

    @property
    def dagster_home(self) -> Path:
        return self.data_path / "dagster"


def settings_to_env(settings: PulseSettings) -> dict[str, str]:
    """PULSE_* variables that give a child process exactly these settings."""
    env = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, list):
            value = ",".join(value)
        elif isinstance(value, dict):
            value = json.dumps(value)
        env[f"PULSE_{name.upper()}"] = str(value)
    return env


def settings_reference() -> list[tuple[str, str, str]]:
    """(variable, default, description) for every setting, for docs and `pulse settings`."""
    rows = []
    for name, info in PulseSettings.model_fields.items():
        default = info.default_factory() if info.default_factory else info.default  # type: ignore[call-arg]
        shown = "" if default in (None, [], {}) else str(default)
        rows.append((f"PULSE_{name.upper()}", shown, info.description or ""))
    return rows


def settings_markdown() -> str:
    """The settings table of docs/configuration.md."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for variable, default, description in settings_reference():
        lines.append(
            f"| `{variable}` | {f'`{default}`' if default else '(unset)'} | {description.replace('|', '/')} |"
        )
    return "\n".join(lines) + "\n"
