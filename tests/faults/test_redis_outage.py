"""Redis stopped for a while and restarted on the same port with its data (append-only file).

The profile app must wait (its sink raises SinkBackpressureError, Quix pauses and retries the
batch) and resume; the collector keeps acknowledging events, since they go to Kafka; the API
answers 503 where it needs Redis; nothing is lost. Each test runs its own Valkey in a temporary
directory, never the session's.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from orchestration.demo_traffic import TrafficGenerator
from orchestration.local_services import ManagedProcess, start_redis
from tests.faults.chaos import PacedPoster, count_in_log, publish_sample_catalog, wait_for
from tests.faults.invariants import check_dlq, check_profiles

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: How long Redis stays down, as the issue asks: longer than every timeout on the way (the
#: sink's 1 s retry, the API's 5 s socket timeout, the rate limiter's 5 s fallback).
REDIS_OUTAGE_SECONDS = 30.0
#: How long a request may take before it counts as unanswered: generous, since speed is not under test.
ANSWER_TIMEOUT = 60.0
EVENTS = 6_000
TRAFFIC_SECONDS = 10.0 + REDIS_OUTAGE_SECONDS


class OwnRedis:
    """A persistent Valkey for one test that can be stopped and started again on the same port."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.proc: ManagedProcess
        self.proc, self.url = start_redis(directory, persist=True)
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])

    def stop(self) -> None:
        self.proc.stop()  # SIGTERM: Valkey fsyncs its append-only file before it exits

    def crash(self) -> None:
        # SIGKILL: Valkey writes the append-only file before it replies, so a killed process loses
        # nothing the profile app saw confirmed (only a machine crash loses up to appendfsync's 1 s).
        self.proc.kill()

    def start(self) -> None:
        self.proc, _ = start_redis(self.directory, port=self.port, persist=True)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path / "own-redis")
    yield server
    server.stop()


@pytest.mark.fault(
    f"Redis killed, down {REDIS_OUTAGE_SECONDS:.0f}s, restarted on the same port with its data"
)
def test_redis_outage_the_app_waits_the_api_answers_503_nothing_is_lost(
    settings, own_redis, launch, supervise, rng, fault_run
):
    s = settings.model_copy(update={"redis_url": own_redis.url})
    catalog = publish_sample_catalog(own_redis.url)
    client = redis.Redis.from_url(own_redis.url)
    launch("api", s)
    apps = supervise(lambda _name: launch("profile-app", s), ["profile-app"])
    base = f"http://{s.api_host}:{s.api_port}"
    events = list(TrafficGenerator(catalog.categories, users=200, seed=rng.randrange(10**6)).events(EVENTS))
    poster = PacedPoster(base, "test-write", events, batch_size=100, seconds=TRAFFIC_SECONDS)
    wait_for(lambda: client.exists("pulse:heartbeat:profile-app"), 60, "a profile app heartbeat")
    poster.start()

    time.sleep(rng.uniform(2.0, 5.0))
    wait_for(lambda: poster.acknowledged, 30, "a first acknowledged batch")
    known = poster.acknowledged[0].get("user_id") or poster.acknowledged[0]["anonymous_id"]
    # Keys that outlive the outage: not the rate limiter's token buckets, which expire in seconds,
    # nor session zsets, which a late event's merge may legitimately empty (and so delete).
    lasting_ms = (REDIS_OUTAGE_SECONDS + 120) * 1000
    lasting = [
        key
        for key in client.scan_iter(count=1000)
        if not key.endswith(b":sessions") and ((ttl := client.pttl(key)) == -1 or ttl > lasting_ms)
    ]
    keys_before = len(lasting)
    client.close()
    acked_before = len(poster.acknowledged)
    own_redis.crash()
    down_at = time.monotonic()
    fault_run.inject(
        f"SIGKILL Redis at {poster.progress:.0%} acknowledged ({keys_before} keys), "
        f"{REDIS_OUTAGE_SECONDS:.0f}s down"
    )

    health, reads = [], []
    with httpx.Client(base_url=base, headers={"X-Pulse-Key": "test-read"}, timeout=ANSWER_TIMEOUT) as api:
        while time.monotonic() - down_at < REDIS_OUTAGE_SECONDS:
            r = api.get("/healthz")
            health.append((r.status_code, r.json().get("redis")))
            reads.append(api.get(f"/v1/profiles/{known}").status_code)
            time.sleep(0.5)
    acked_during = len(poster.acknowledged) - acked_before
    alive_during = apps.all_alive() and not apps.unplanned
    own_redis.start()
    client = redis.Redis.from_url(own_redis.url)
    lost = [key for key in lasting if not client.exists(key)]
    fault_run.inject(f"restarted Redis on port {own_redis.port} after {time.monotonic() - down_at:.1f}s")

    fault_run.check(
        "GET /healthz answers 503 (redis: false) while Redis is down",
        health and all(code == 503 and flag is False for code, flag in health),
        f"{len(health)} probes: {sorted(set(health))}",
    )
    fault_run.check(
        "GET /v1/profiles answers 503 while Redis is down",
        reads and all(code == 503 for code in reads),
        f"{len(reads)} reads answered {sorted(set(reads))}",
    )
    fault_run.check(
        "the collector keeps acknowledging events (they go to Kafka)",
        acked_during > 0,
        f"{acked_during} events acknowledged during the outage; {poster.refused} retryable 429/503 "
        "answers in the whole run (retried, and counted below: nothing lost)",
    )
    waited = count_in_log(apps.procs["profile-app"], "Redis unavailable")
    fault_run.check(
        "the profile app waits (no exit) and retries",
        alive_during and waited > 0,
        f"alive throughout, logged 'Redis unavailable ... retrying the batch' {waited} times"
        if alive_during
        else f"exits: {apps.unplanned}",
    )
    fault_run.check(
        "Redis came back with its data (append-only file, after a SIGKILL)",
        not lost,
        f"{keys_before} lasting keys before the kill, "
        f"{len(lost)} of them missing after the restart {lost[:3]}",
    )

    acknowledged = poster.join_and_check(120)
    wait_for(lambda: httpx.get(f"{base}/healthz").status_code == 200, 30, "a healthy API")
    fault_run.check(
        "GET /healthz and GET /v1/profiles back to 200 without an API restart",
        httpx.get(f"{base}/v1/profiles/{known}", headers={"X-Pulse-Key": "test-read"}).status_code == 200,
        "",
    )
    check_profiles(fault_run, s, catalog, acknowledged)
    check_dlq(fault_run, s, acknowledged, exact=poster.refused == 0)
    client.close()


def _status(base: str, call: str) -> int | str:
    """Status of one call ("GET /path") on a fresh connection (the API closes a connection after
    a 500), or the error.
    """
    method, path = call.split(" ", 1) if " " in call else ("GET", call)
    try:
        return httpx.request(
            method, f"{base}{path}", headers={"X-Pulse-Key": "test-read"}, timeout=ANSWER_TIMEOUT
        ).status_code
    except httpx.HTTPError as exc:
        return type(exc).__name__


def _redis_healthy(base: str, last: list[object]) -> bool:
    """Whether GET /healthz reports Redis reachable; ``last`` keeps the latest answer for the
    failure message.
    """
    try:
        response = httpx.get(f"{base}/healthz", timeout=ANSWER_TIMEOUT)
        last[:] = [response.status_code, response.json()]
    except (httpx.HTTPError, ValueError) as exc:
        last[:] = [type(exc).__name__]
        return False
    return response.json().get("redis") is True


@pytest.mark.fault("Redis stopped under the API alone: what reads answer")
def test_api_reads_answer_503_while_redis_is_down(settings, own_redis, launch, fault_run):
    s = settings.model_copy(update={"redis_url": own_redis.url})
    launch("api", s)
    base = f"http://{s.api_host}:{s.api_port}"
    paths = ["GET /v1/profiles/u-nobody", "GET /v1/decisions/u-nobody", "DELETE /v1/profiles/u-nobody"]
    up = {path: _status(base, path) for path in paths}
    own_redis.stop()
    fault_run.inject("SIGTERM Redis; restarted 3s later")
    began = time.monotonic()
    down = {path: _status(base, path) for path in [*paths, "GET /healthz"]}
    took = time.monotonic() - began
    time.sleep(max(0.0, 3.0 - took))
    own_redis.start()
    # Redis's part of /healthz: the whole answer also needs the session broker, not under test here.
    last: list[object] = []
    try:
        wait_for(lambda: _redis_healthy(base, last), 30, "the API to see Redis again after the restart")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last /healthz: {last}") from exc
    again = {path: _status(base, path) for path in paths}
    fault_run.check(
        "reads answer 404 (forget: 202) for an unknown person while Redis is up",
        list(up.values()) == [404, 404, 202],
        f"{up}",
    )
    fault_run.check("reads recover without an API restart", again == up, f"after the restart: {again}")
    fault_run.check(
        "profile reads, forget and /healthz answer 503 (retryable) while Redis is down",
        set(down.values()) == {503},
        f"{down} in {took:.2f}s",
    )
