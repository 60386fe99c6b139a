"""`pulse up`: run the whole local platform in the foreground and stop it cleanly.

Embedded broker and Redis (unless addresses are configured) -> topics -> sample reference data ->
collector/API, profile app, archiver, webhook relay, `dagster dev` as child processes, restarted if
they crash.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka.admin import AdminClient

from core import service_registry
from core.broker_hold import STOPPED_PREFIX, BrokerHold
from core.kafka_config import client_config
from core.redis_client import redis_from_url
from core.settings import DEV_READ_KEY, DEV_WEBHOOK_SECRET, DEV_WRITE_KEY, PulseSettings, settings_to_env
from core.topics import ensure_topics, topic_specs
from enrichment.reference_publish import publish_missing_samples
from orchestration.broker_maintenance import (
    BrokerMaintainer,
    MaintenanceAborted,
    MaintenanceFailed,
    required_readers,
)
from orchestration.fork_priority import ForkPriority
from orchestration.local_services import ManagedProcess, port_accepts, start_broker, start_redis

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: The apps that consume from the broker: stopped and started again around its maintenance.
CONSUMER_APPS = ("profile-app", "archiver", "relay")
#: How long the consumer apps get to close their Kafka clients before a broker restart.
CONSUMER_STOP_SECONDS = 15.0
#: Partitions per topic on the embedded broker unless PULSE_TOPIC_PARTITIONS is set.
EMBEDDED_BROKER_PARTITIONS = 1


def pulse_app_process(name: str, env: dict[str, str], log_dir: Path) -> ManagedProcess:
    """A not-yet-started `pulse run <name>` child process logging to ``log_dir/<name>.log``."""
    return ManagedProcess(
        name,
        [sys.executable, "-m", "orchestration.cli", "run", name],
        log_dir / f"{name}.log",
        env=env,
        cwd=PROJECT_ROOT,
    )


def settings_process_env(settings: PulseSettings) -> dict[str, str]:
    """This process's environment with its PULSE_* variables replaced by ``settings``."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("PULSE_")},
        **settings_to_env(settings),
    }


class PlatformError(RuntimeError):
    """`pulse up` cannot start; the message says why and what to do."""


@dataclass
class App:
    """A supervised child process and how to (re)create it."""

    name: str
    make: Callable[[], ManagedProcess]
    process: ManagedProcess | None = None
    restarts: int = 0
    next_start: float = 0.0


@dataclass
class LocalPlatform:
    settings: PulseSettings
    with_dagster: bool = True
    say: Callable[[str], None] = logger.info
    infra: list[ManagedProcess] = field(default_factory=list)
    apps: list[App] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    maintainer: BrokerMaintainer | None = None
    #: After a maintenance that gave up, the next attempt waits this long.
    maintenance_retry_seconds: float = 30.0
    _next_maintenance: float = 0.0
    #: The embedded Valkey's AOF-rewrite children, lowered in priority (orchestration/fork_priority.py).
    redis_forks: ForkPriority | None = None

    def start(self) -> dict[str, str]:
        """Start everything; return the URLs to show."""
        s = self.settings
        data = s.data_path
        data.mkdir(parents=True, exist_ok=True)
        if service_registry.read_services(s.services_file):
            raise PlatformError(f"`pulse up` is already running with PULSE_DATA_DIR={data}")
        if port_accepts(s.api_host, s.api_port):
            raise PlatformError(f"port {s.api_port} is in use: stop what uses it or set PULSE_API_PORT")

        brokers = s.kafka_brokers
        if not brokers:
            self.say("starting embedded Kafka-protocol broker (Tansu, memory storage) ...")
            proc, brokers = start_broker(data)
            self.infra.append(proc)
            self.maintainer = self._broker_maintainer(brokers)
            if "topic_partitions" not in s.model_fields_set:
                # Tansu's latency grows with partitions x data held (docs/architecture.md).
                s = self.settings = s.model_copy(update={"topic_partitions": EMBEDDED_BROKER_PARTITIONS})
        redis_url = s.redis_url
        if not redis_url:
            self.say("starting embedded Redis (Valkey) ...")
            proc, redis_url = start_redis(data)
            self.infra.append(proc)
            self.redis_forks = ForkPriority(proc.pid) if proc.pid else None

        admin = AdminClient(client_config(s, brokers))
        created = ensure_topics(admin, topic_specs(s), s.topic_replication_factor)
        if created:
            self.say(f"created topics: {', '.join(created)}")
        client = redis_from_url(redis_url)
        for published in publish_missing_samples(client):  # catalog, geo ranges, campaigns
            self.say(f"published the sample {published}")
        client.close()

        urls = {
            "kafka_brokers": brokers,
            "redis_url": redis_url,
            "api_url": f"http://{s.api_host}:{s.api_port}",
            "api_docs": f"http://{s.api_host}:{s.api_port}/docs",
        }
        self.env = {
            **os.environ,
            "PULSE_DATA_DIR": str(data),
            "PULSE_TOPIC_PARTITIONS": str(s.topic_partitions),
            "PULSE_KAFKA_BROKERS": brokers,
            "PULSE_REDIS_URL": redis_url,
            "DAGSTER_HOME": str(s.dagster_home),
        }
        if not s.write_keys and not s.read_keys and not s.admin_keys and not s.keys_file:
            self.env["PULSE_DEV_MODE"] = "true"
            urls["write_key"], urls["read_key"] = DEV_WRITE_KEY, DEV_READ_KEY
        if self.env.get("PULSE_DEV_MODE") == "true" or s.dev_mode or s.demo_shop:
            urls["demo_shop"] = f"http://{s.api_host}:{s.api_port}/demo"

        names = ["api", "profile-app", "archiver"]
        if s.webhook_secret is not None:
            names.append("relay")
        elif self.env.get("PULSE_DEV_MODE") == "true" or s.dev_mode:
            names.append("relay")
            urls["webhook_secret"] = DEV_WEBHOOK_SECRET
        else:  # the decisions wait in the triggers topic; a relay started later catches up
            self.say(
                "not starting the webhook relay: PULSE_WEBHOOK_SECRET is unset (docs/security.md); "
                "webhook decisions wait in the triggers topic until a relay runs"
                + (" or the embedded broker's next maintenance" if self.maintainer else "")
            )
        if self.maintainer is not None:
            self.maintainer.settings = s
            self.maintainer.readers = required_readers(s, relay="relay" in names)
            self.env["PULSE_BROKER_HOLD_DIR"] = str(self.maintainer.hold.directory)
        self.apps = [App(name, lambda name=name: self._pulse_app(name)) for name in names]
        urls["archive"] = str(s.archive_path)
        if self.with_dagster:
            s.dagster_home.mkdir(parents=True, exist_ok=True)
            urls["dagster_url"] = f"http://127.0.0.1:{s.dagster_port}"
            self.apps.append(App("dagster", self._dagster))
        for app in self.apps:
            self._start_app(app)
        self.apps[0].process.wait_for_port(s.api_host, s.api_port, timeout=60)  # type: ignore[union-attr]
        service_registry.write_services(s.services_file, urls)
        return urls

    def _broker_maintainer(self, brokers: str) -> BrokerMaintainer:
        """Maintenance of the embedded broker (orchestration/broker_maintenance.py)."""
        hold = BrokerHold(self.settings.data_path / "state" / "broker-hold")
        hold.prepare()
        port = int(brokers.rsplit(":", 1)[1])

        def restart() -> None:
            self.infra[0].kill()  # memory storage: nothing to save, and it is drained
            hold.broker_down(maintainer.generation)  # producer ids from now on are the new broker's
            self.infra[0], _ = start_broker(self.settings.data_path, port)

        def consumers() -> list[App]:
            return [app for app in self.apps if app.name in CONSUMER_APPS]

        def stop_consumers() -> None:
            # Each closes its Kafka clients and waits (streaming/broker_hold_follower.py); one that
            # does not say so in time is killed: it has committed everything.
            running = [app for app in consumers() if app.process is not None and app.process.alive()]
            generation = maintainer.generation
            hold.begin_restart(generation)
            deadline = time.monotonic() + CONSUMER_STOP_SECONDS
            while hold.acknowledgements(generation, STOPPED_PREFIX) < len(running):
                if time.monotonic() > deadline:
                    for app in running:
                        app.process.kill()  # type: ignore[union-attr]
                        app.process = None
                    break
                time.sleep(0.005)

        def start_consumers() -> None:
            for app in consumers():
                if app.process is None:
                    self._start_app(app)

        maintainer = BrokerMaintainer(
            self.settings,
            brokers,
            restart,
            hold,
            stop_consumers=stop_consumers,
            start_consumers=start_consumers,
            while_waiting=self.restart_crashed_apps,
            collectors=self.settings.api_workers,
            say=self.say,
        )
        return maintainer

    def maintain_broker_if_due(self) -> None:
        """Run embedded-broker maintenance when a collector asked for it."""
        maintainer = self.maintainer
        if maintainer is None or time.monotonic() < self._next_maintenance or not maintainer.due():
            return
        try:
            maintainer.run()
        except MaintenanceAborted as exc:
            self._next_maintenance = time.monotonic() + self.maintenance_retry_seconds
            self.say(f"broker maintenance postponed {self.maintenance_retry_seconds:.0f}s: {exc}")
        except MaintenanceFailed as exc:
            raise PlatformError(f"{exc}; restart `pulse up` (its embedded broker starts empty)") from exc

    def _pulse_app(self, name: str) -> ManagedProcess:
        return pulse_app_process(name, self.env, self.settings.data_path / "logs")

    def _dagster(self) -> ManagedProcess:
        dagster = Path(sys.executable).with_name("dagster")
        return ManagedProcess(
            "dagster",
            [
                str(dagster),
                "dev",
                "-w",
                str(PROJECT_ROOT / "workspace.yaml"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.settings.dagster_port),
            ],
            self.settings.data_path / "logs" / "dagster.log",
            env=self.env,
            cwd=PROJECT_ROOT,
        )

    def _start_app(self, app: App) -> None:
        app.process = app.make()
        app.process.start()

    def supervise_once(self) -> None:
        """Restart crashed apps with a growing delay; fail if embedded infra died; maintain the broker;
        lower the priority of the embedded Valkey's AOF rewrites."""
        self.maintain_broker_if_due()
        if self.redis_forks is not None:
            self.redis_forks.lower()
        for proc in self.infra:
            if not proc.alive():
                raise PlatformError(f"{proc.name} stopped unexpectedly; see {proc.log_path}")
        self.restart_crashed_apps()

    def restart_crashed_apps(self) -> None:
        """Restart apps that exited, each after a delay that grows with its restarts."""
        now = time.monotonic()
        for app in self.apps:
            if app.process is not None and not app.process.alive():
                delay = min(30.0, 2.0**app.restarts)
                self.say(
                    f"{app.name} exited (code {app.process.process.returncode}); "
                    f"restarting in {delay:.0f}s — log: {app.process.log_path}"
                )  # type: ignore[union-attr]
                app.process, app.next_start = None, now + delay
                app.restarts += 1
            elif app.process is None and now >= app.next_start:
                self._start_app(app)

    def stop(self) -> None:
        """Stop apps first (so they commit), then Redis and the broker."""
        for app in reversed(self.apps):
            if app.process is not None:
                app.process.stop()
        for proc in reversed(self.infra):
            proc.stop()
        try:
            self.settings.services_file.unlink()
        except FileNotFoundError:
            pass
