"""The real Segment and RudderStack SDKs (Python and Node) send to Pulse by changing only their host.

Every client sends the same shop session and must produce the same exact profiles, also when the
collector answers 503 for a while and is then replaced by a healthy one on the same port.
"""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from rudderstack.analytics.client import Client as RudderClient
from segment.analytics.client import Client as SegmentClient

from orchestration.local_services import free_port
from orchestration.platform import pulse_app_process, settings_process_env
from tests.integration.helpers import store_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NODE_SCRIPT = ROOT / "tests" / "node" / "send-shop-session.mjs"
SDKS = ["segment", "rudderstack", "node"]
#: The Node client's backoff is capped at 1 s, so its default 3 retries ride out only a few seconds
#: of outage; 30 cover the 503s and the collector's restart (see docs/segment.md).
NODE_RETRYING_MAX_RETRIES = 30

Finish = Callable[[float], list]  # wait up to timeout seconds for the client; its delivery errors


def shop_session(client, prefix: str, bulk: int = 0) -> None:
    """The session every client sends; tests/node/send-shop-session.mjs sends the same calls."""
    anon, user = f"{prefix}-anon", f"{prefix}-user"
    for _ in range(3):
        client.page(anonymous_id=anon, category="shoes", name="Shoes", properties={"product_id": "p1"})
    client.track(anonymous_id=anon, event="Product Clicked", properties={"product_id": "p1"})
    client.track(anonymous_id=anon, event="Products Searched", properties={"query": "running shoes"})
    client.track(
        anonymous_id=anon,
        event="Product Added",
        properties={"product_id": "p1", "quantity": 2, "price": 10.0},
    )
    client.track(anonymous_id=anon, event="Product Removed", properties={"product_id": "p1", "quantity": 1})
    client.identify(user_id=user, anonymous_id=anon, traits={"plan": "pro"})
    client.identify(user_id=f"{prefix}-server", traits={"plan": "team"})  # server-side: no anonymous id
    client.track(
        user_id=user,
        anonymous_id=anon,
        event="Order Completed",
        properties={"order_id": "o1", "revenue": 25.0, "product_id": "p1", "quantity": 1},
    )
    client.alias(previous_id=f"{prefix}-old", user_id=user)
    # A second account of the same person, then an alias between the two known user ids: one person.
    client.track(user_id=f"{prefix}-other", event="Product Viewed", properties={"product_id": "p3"})
    client.alias(previous_id=f"{prefix}-other", user_id=user)
    fixed = {"user_id": user, "event": "Product Viewed", "properties": {"product_id": "p2"}}
    fixed["message_id"] = f"{prefix}-fixed-1"
    client.track(**fixed)
    for i in range(bulk):
        client.track(user_id=f"{prefix}-bulk", event="Product Viewed", properties={"product_id": f"b{i}"})
    client.flush()
    client.track(**fixed)  # a re-sent message (same messageId) counts once
    client.flush()


def expected(prefix: str, bulk: int = 0) -> dict[str, dict]:
    profiles = {
        f"{prefix}-anon": {
            "event_count": 7,
            "counts_by_type": {
                "add_to_cart": 1,
                "click": 1,
                "page_view": 3,
                "remove_from_cart": 1,
                "search": 1,
            },
            "category_views": {"shoes": 3},
            "cart": {"p1": 1},
        },
        f"{prefix}-user": {
            "event_count": 5,
            "counts_by_type": {"identify": 3, "product_viewed": 1, "purchase": 1},
            "purchase_total": 25.0,
            "cart": {},
            "anonymous_ids": [f"{prefix}-anon", f"{prefix}-old", f"{prefix}-other"],
        },
        f"{prefix}-other": {"event_count": 1, "counts_by_type": {"product_viewed": 1}, "anonymous_ids": []},
    }
    profiles[f"{prefix}-server"] = {"event_count": 1, "counts_by_type": {"identify": 1}, "anonymous_ids": []}
    if bulk:
        profiles[f"{prefix}-bulk"] = {"event_count": bulk, "counts_by_type": {"product_viewed": bulk}}
    return profiles


def expected_people(prefix: str) -> dict[str, dict]:
    """GET /v1/profiles/{id} of the session's people: the alias merged the two accounts into one
    person named by the smaller user id; the identify-only user is a person of its own."""
    merged = {
        "profile_id": f"{prefix}-other",
        "user_id": f"{prefix}-other",
        "event_count": 13,
        "counts_by_type": {
            "add_to_cart": 1,
            "click": 1,
            "identify": 3,
            "page_view": 3,
            "product_viewed": 2,
            "purchase": 1,
            "remove_from_cart": 1,
            "search": 1,
        },
        "anonymous_ids": [f"{prefix}-anon", f"{prefix}-old"],
    }
    server = {
        "profile_id": f"{prefix}-server",
        "user_id": f"{prefix}-server",
        "event_count": 1,
        "counts_by_type": {"identify": 1},
        "anonymous_ids": [],
    }
    return {f"{prefix}-{who}": merged for who in ("user", "other", "anon")} | {f"{prefix}-server": server}


def check_people(settings, prefix: str) -> None:
    """The people and the identity record as the API serves them (read key)."""
    base, headers = f"http://{settings.api_host}:{settings.api_port}", {"X-Pulse-Key": "test-read"}
    want = expected_people(prefix)
    for pid, fields in want.items():
        doc = httpx.get(f"{base}/v1/profiles/{pid}", headers=headers).json()
        assert {k: doc.get(k) for k in fields} == fields, pid
    identity = httpx.get(f"{base}/v1/profiles/{prefix}-anon/identity", headers=headers).json()
    assert identity["person_id"] == f"{prefix}-other"
    assert identity["user_ids"] == [f"{prefix}-other", f"{prefix}-user"]
    assert [link["ids"] for link in identity["links"]] == [[f"{prefix}-other", f"{prefix}-user"]]
    assert identity["refused_links"] == []


def wait_for_fields(settings, want: dict[str, dict], timeout: float = 30) -> dict[str, dict | None]:
    """Poll the live profiles until the fields named in ``want`` equal it; return the last read."""
    store = store_for(settings.redis_url, settings.session_timeout_seconds * 1000)
    deadline = time.monotonic() + timeout
    while True:
        live = {pid: store.get_profile(pid) for pid in want}
        got = {pid: {k: doc.get(k) for k in want[pid]} if doc else None for pid, doc in live.items()}
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


@pytest.fixture(scope="session")
def node_deps() -> Path:
    """The locked @segment/analytics-node in tests/node; fails (never skips) when Node.js is missing."""
    done = subprocess.run(
        [ROOT / "scripts" / "install-node-deps"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"scripts/install-node-deps failed:\n{done.stderr}"
    return NODE_SCRIPT


def start_python_client(sdk: str, base: str, prefix: str, *, bulk: int, retrying: bool) -> Finish:
    """Send the session with a Python SDK; when retrying, in its background mode (the only one
    that retries).
    """
    errors: list = []
    options = {"write_key": "test-write", "host": base, "gzip": True}
    options["on_error"] = lambda error, _batch: errors.append(error)
    if not retrying:
        client = (SegmentClient if sdk == "segment" else RudderClient)(sync_mode=True, **options)
        shop_session(client, prefix, bulk)
        return lambda _timeout: errors
    if sdk == "segment":
        # A 503 with Retry-After re-queues the batch and waits, bounded by max_rate_limit_duration
        # (30 min by default: shortened so a failure shows as an error, not a hang).
        client = SegmentClient(sync_mode=False, max_rate_limit_duration=45, **options)
    else:
        client = RudderClient(sync_mode=False, **options)  # retries 5xx with exponential backoff, 10 times
    thread = threading.Thread(target=shop_session, args=(client, prefix, bulk), daemon=True)
    thread.start()

    def finish(timeout: float) -> list:
        thread.join(timeout)
        assert not thread.is_alive(), f"{sdk} client still flushing after {timeout} s; errors: {errors}"
        client.join()
        return errors

    return finish


def locked_node_sdk_version() -> str:
    lock = json.loads((NODE_SCRIPT.parent / "package-lock.json").read_text())
    return lock["packages"]["node_modules/@segment/analytics-node"]["version"]


def start_node_client(
    script: Path, base: str, prefix: str, *, bulk: int, retrying: bool
) -> tuple[Finish, subprocess.Popen]:
    """Send the session with @segment/analytics-node in a child process."""
    command = ["node", script, "--host", base, "--write-key", "test-write"]
    command += ["--prefix", prefix, "--bulk", str(bulk)]
    if retrying:
        command += ["--max-retries", str(NODE_RETRYING_MAX_RETRIES), "--flush-timeout-ms", "50000"]
    proc = subprocess.Popen(
        command, cwd=script.parent, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )

    def finish(timeout: float) -> list:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(f"the Node client did not finish in {timeout} s") from None
        lines = out.strip().splitlines()
        assert lines, f"no summary from the Node client (exit {proc.returncode}):\n{err}"
        result = json.loads(lines[-1])
        assert result["version"] == locked_node_sdk_version(), result
        assert result["sent"] == 15 + bulk, result  # the calls of shop_session
        if proc.returncode != 0 and not result["failed"]:
            return [f"exit {proc.returncode}: {err}"]
        return result["failed"]

    return finish, proc


@pytest.fixture
def send_session(request, settings) -> Iterator[Callable[..., Finish]]:
    """Factory: start an SDK sending the shop session to the collector; Node children end with the test."""
    base = f"http://{settings.api_host}:{settings.api_port}"
    children: list[subprocess.Popen] = []

    def start(sdk: str, prefix: str, *, bulk: int = 0, retrying: bool = False) -> Finish:
        if sdk != "node":
            return start_python_client(sdk, base, prefix, bulk=bulk, retrying=retrying)
        finish, child = start_node_client(
            request.getfixturevalue("node_deps"), base, prefix, bulk=bulk, retrying=retrying
        )
        children.append(child)
        return finish

    yield start
    for child in children:
        if child.poll() is None:
            child.kill()
            child.wait()


@pytest.mark.parametrize("sdk", SDKS)
def test_sdk_traffic_gives_exact_profiles(settings, pulse_apps, send_session, sdk):
    pulse_apps("profile-app")
    pulse_apps("api")
    finish = send_session(sdk, sdk)
    assert finish(60) == []
    want = expected(sdk)
    assert wait_for_fields(settings, want) == want
    check_people(settings, sdk)


def refused_503s(base: str) -> int:
    """How many Segment/collector requests the collector at ``base`` has answered with 503."""
    try:
        text = httpx.get(f"{base}/metrics", timeout=2).text
    except httpx.HTTPError:
        return 0
    found = re.search(r'^pulse_collector_requests_total\{status="503"\} (\S+)$', text, re.MULTILINE)
    return int(float(found.group(1))) if found else 0


@pytest.mark.parametrize("sdk", SDKS)
def test_503s_then_a_healthy_collector_lose_and_duplicate_nothing(
    settings, pulse_apps, send_session, tmp_path, sdk
):
    pulse_apps("profile-app")
    base = f"http://{settings.api_host}:{settings.api_port}"
    prefix, bulk = f"{sdk}-retry", 30

    # A collector whose broker is unreachable answers 503 (with Retry-After: 1) to every batch.
    dead = settings.model_copy(
        update={"kafka_brokers": f"127.0.0.1:{free_port()}", "delivery_timeout_ms": 1500}
    )
    broken = pulse_app_process("api", settings_process_env(dead), tmp_path / "logs-broken")
    broken.start()
    try:
        broken.wait_for_port(settings.api_host, settings.api_port, timeout=60)
        finish = send_session(sdk, prefix, bulk=bulk, retrying=True)
        deadline = time.monotonic() + 30
        while refused_503s(base) < 3:  # the client keeps retrying through the 503s
            assert time.monotonic() < deadline, "the collector never answered 503 three times"
            time.sleep(0.2)
    finally:
        broken.stop()

    # A healthy collector on the same port, started while the client is still retrying.
    pulse_apps("api")
    assert finish(50) == []
    want = expected(prefix, bulk)
    assert wait_for_fields(settings, want) == want  # every message once, the re-sent one too


def test_segment_endpoints_reject_per_message_and_check_keys(settings, pulse_apps):
    pulse_apps("api")
    base = f"http://{settings.api_host}:{settings.api_port}"
    batch = {
        "batch": [
            {
                "type": "track",
                "event": "X",
                "messageId": "m1",
                "userId": "u",
                "timestamp": "2024-04-25T11:00:00Z",
            },
            {"type": "group", "messageId": "m2", "userId": "u"},  # no groupId
        ],
        "sentAt": "2024-04-25T11:00:01Z",
    }
    response = httpx.post(f"{base}/v1/batch", json=batch, auth=("test-write", ""))
    assert response.status_code == 200
    assert response.json()["accepted"] == 1
    assert "groupId" in response.json()["rejected"][0]["error"]
    assert httpx.post(f"{base}/v1/batch", json=batch).status_code == 401
    assert httpx.post(f"{base}/v1/batch", json={**batch, "writeKey": "test-write"}).status_code == 200
    assert httpx.post(f"{base}/v1/batch", json=batch, auth=("wrong", "")).status_code == 401
    # A gzip bomb (a few KB that inflate past the limit) is refused without inflating it all.
    bomb = gzip.compress(b"{" + b" " * (50 * 1024 * 1024) + b"}")
    response = httpx.post(
        f"{base}/v1/batch",
        content=bomb,
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        auth=("test-write", ""),
    )
    assert response.status_code == 413
    single = httpx.post(
        f"{base}/v1/track",
        json={"event": "Signed Up", "messageId": "m3", "userId": "u", "timestamp": "2024-04-25T11:00:00Z"},
        auth=("test-write", ""),
    )
    assert single.status_code == 200 and single.json()["accepted"] == 1
