"""Identity beyond one level on real processes: the collector, the profile app and the API, with
`pulse identity show` and `pulse identity unlink` run as the command line (docs/identity.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from assets.identity_unlinks import reapply_unlinks, unlinks_file
from orchestration.platform import pulse_app_process, settings_process_env
from streaming.profiles.keys import links_key
from streaming.profiles.store import RedisProfileStore
from tests.integration.helpers import eventually, post_batches

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
READ = {"X-Pulse-Key": "test-read"}


def event(event_type: str, minute: int, user: str | None = None, anon: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "timestamp": f"2024-05-01T10:{minute:02d}:00Z",
    }
    if user:
        body["user_id"] = user
    if anon:
        body["anonymous_id"] = anon
    return body


def pulse(settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestration.cli", *args],
        env=settings_process_env(settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def person(base: str, pid: str) -> dict[str, Any] | None:
    response = httpx.get(f"{base}/v1/profiles/{pid}", headers=READ)
    return response.json() if response.status_code == 200 else None


@pytest.fixture
def apps(settings, tmp_path, redis_client) -> Iterator[Any]:
    """The profile app, the archiver and the API with PULSE_IDENTITY_MAX_IDS=2 on an empty Redis
    (``redis_client`` flushes it); stopped after the test."""
    limited = settings.model_copy(update={"identity_max_ids": 2})
    started = []
    for name in ("profile-app", "archiver", "api"):
        proc = pulse_app_process(name, settings_process_env(limited), tmp_path / "logs")
        proc.start()
        started.append(proc)
    started[-1].wait_for_port(limited.api_host, limited.api_port, timeout=60)
    yield limited
    for proc in started:
        proc.stop()


def test_merge_identity_record_limit_and_unlink(apps):
    """Three accounts linked in a chain (b~a, c~b) with at most 2 user ids a person: the later link
    is refused and reported; `pulse identity unlink a b` splits the first merge for good, even when
    the linking event is sent again and a new event links the two once more."""
    settings = apps
    base = f"http://{settings.api_host}:{settings.api_port}"
    first_link = event("identify", 5, "id-b", "id-a")
    events = [
        event("page_view", 1, "id-a"),
        event("click", 2, "id-b"),
        event("click", 3, "id-c"),
        event("page_view", 4, None, "visitor"),
        event("identify", 4, "id-a", "visitor"),
        first_link,
        event("identify", 6, "id-c", "id-b"),  # would make a person of 3 user ids: refused
    ]
    post_batches(base, "test-write", events)

    def merged() -> bool:
        doc = person(base, "visitor")
        return (
            doc is not None
            and doc["event_count"] == 5
            and (person(base, "id-c") or {}).get("event_count") == 2
        )

    assert eventually(merged, timeout=30), (person(base, "visitor"), person(base, "id-c"))
    for pid in ("id-a", "id-b", "visitor"):
        doc = person(base, pid)
        assert (doc["profile_id"], doc["user_id"], doc["anonymous_ids"]) == ("id-a", "id-a", ["visitor"])
    assert person(base, "id-c")["profile_id"] == "id-c"

    record = httpx.get(f"{base}/v1/profiles/id-b/identity", headers=READ).json()
    assert (record["person_id"], record["user_ids"], record["max_ids"]) == ("id-a", ["id-a", "id-b"], 2)
    assert [(link["ids"], link["event_id"], link["status"]) for link in record["links"]] == [
        (["id-a", "id-b"], first_link["event_id"], "merged")
    ]
    assert [(link["ids"], link["status"]) for link in record["refused_links"]] == [
        (["id-b", "id-c"], "refused")
    ]
    assert [(a["id"], a["user_id"]) for a in record["anonymous_ids"]] == [("visitor", "id-a")]
    assert httpx.get(f"{base}/v1/profiles/nobody/identity", headers=READ).status_code == 404
    metrics = httpx.get(f"{base}/metrics").text
    assert "pulse_identity_links_refused 1.0" in metrics

    shown = pulse(settings, "identity", "show", "visitor")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["links"] == record["links"]
    assert pulse(settings, "identity", "show", "nobody").returncode == 1

    unlinked = pulse(settings, "identity", "unlink", "id-a", "id-b", "--json")
    assert unlinked.returncode == 0, unlinked.stderr
    result = json.loads(unlinked.stdout)
    assert result["were_one_person"] and not result["still_one_person"]
    # With a~b gone, the limit no longer holds c~b back: b and c are one person now.
    assert result["after"]["id-b"] == {"person_id": "id-b", "user_ids": ["id-b", "id-c"], "anonymous_ids": []}
    assert result["after"]["id-a"] == {
        "person_id": "id-a",
        "user_ids": ["id-a"],
        "anonymous_ids": ["visitor"],
    }
    assert person(base, "visitor")["event_count"] == 3  # id-a's page view and the visitor's two events
    assert person(base, "id-b")["event_count"] == 4  # b's click and identify, c's click and identify
    # b~c is merged now: the gauge counts the links refused now, not the ones refused once.
    assert "pulse_identity_links_refused 0.0" in httpx.get(f"{base}/metrics").text

    # The same linking event again, and a new identify linking the pair: neither links them again.
    post_batches(
        base, "test-write", [first_link, event("identify", 9, "id-a", "id-b"), event("click", 9, "id-b")]
    )
    assert eventually(lambda: (person(base, "id-b") or {}).get("event_count") == 5, timeout=30)
    assert eventually(lambda: (person(base, "id-a") or {}).get("event_count") == 4, timeout=30)
    assert person(base, "id-a")["profile_id"] == "id-a" and person(base, "id-b")["profile_id"] == "id-b"
    record = httpx.get(f"{base}/v1/profiles/id-a/identity", headers=READ).json()
    assert record["user_ids"] == ["id-a"] and record["links"] == []
    assert [u["ids"] for u in record["unlinked"]] == [["id-a", "id-b"]]
    assert pulse(settings, "identity", "unlink", "id-a", "id-a").returncode == 2

    # `pulse reconcile` recomputes every id's person from the archive (the unlinked pair taken
    # from Redis) and finds Redis equal; a link written behind the stream's back is drift.
    reconciled = pulse(settings, "reconcile", "--json")
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
    report = json.loads(reconciled.stdout)
    assert (report["people_checked"], report["people_mismatched"]) == (4, 0)
    redis.Redis.from_url(settings.redis_url).hset(links_key("id-c"), "id-a", f"0:{uuid.uuid4()}")
    drifted = pulse(settings, "reconcile", "--json")
    assert drifted.returncode == 1, drifted.stdout + drifted.stderr
    report = json.loads(drifted.stdout)
    # c~a at time 0 comes first: {a, c} is one person in Redis, and b~c is refused (limit 2).
    assert report["people_mismatched"] == 1
    assert [e for e in report["examples"] if e["kind"] == "person"] == [
        {"profile_id": "id-c", "kind": "person", "fields": {"person_id": {"batch": "id-b", "redis": "id-a"}}}
    ]

    # Redis lost: the unlink log re-applied (the seam of a rebuild), then the archive replayed.
    assert [
        json.loads(line)["ids"] for line in unlinks_file(settings.archive_path).read_text().splitlines()
    ] == [["id-a", "id-b"]]
    client = redis.Redis.from_url(settings.redis_url)
    client.flushdb()
    store = RedisProfileStore(
        client, dedupe_window_seconds=3600, session_gap_ms=1_800_000, identity_max_ids=2
    )
    assert reapply_unlinks(store, settings.archive_path) == 1
    replayed = pulse(settings, "replay")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert eventually(lambda: (person(base, "id-b") or {}).get("event_count") == 5, timeout=60)
    assert eventually(lambda: (person(base, "id-a") or {}).get("event_count") == 4, timeout=30)
    assert person(base, "id-a")["profile_id"] == "id-a" and person(base, "id-c")["profile_id"] == "id-b"
