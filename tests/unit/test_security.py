"""Keys (hashed, scoped, reloaded), IP anonymization and what reaches the logs, in process
(docs/security.md).
"""

from __future__ import annotations

import base64
import csv
import json
import logging
import os
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml
from click.testing import CliRunner
from fastapi.testclient import TestClient

from core.settings import PulseSettings, settings_to_env
from enrichment.geo import SAMPLE_GEO, GeoIndex
from orchestration.cli import cli
from streaming.api.app import create_app
from streaming.api.auth import KeyConfigError, KeyRing, MissingKeysError, Scope, grants, hash_key
from streaming.api.ingest import Unmappable, plan_ingest
from streaming.api.ip_privacy import IPAnonymizer, IPHashKeyMissing, hash_ip, truncate_ip
from streaming.api.keys_file import KeysFileError, KeysFollower, parse_keys_file
from streaming.api.rate_limit import RateLimiter

EVENT = {
    "event_id": "123e4567-e89b-42d3-a456-426614174000",
    "event_type": "page_view",
    "user_id": "u1",
    "timestamp": "2024-04-25T14:23:05.123Z",
    "metadata": {"ip": "203.0.113.77", "category": "shoes"},
}


def keys_yaml(*entries: tuple[str, str, list[str]]) -> str:
    return yaml.safe_dump({"keys": [{"name": n, "hash": hash_key(k), "scopes": s} for n, k, s in entries]})


# --- keys in the settings -------------------------------------------------------------------


def test_plain_and_hashed_entries_grant_the_same_scopes():
    ring = KeyRing.from_settings(
        PulseSettings(write_keys=f"w-plain,{hash_key('w-hashed')}", read_keys="r1", admin_keys=hash_key("a1"))
    )
    assert ring.scopes_of("w-plain") == ring.scopes_of("w-hashed") == {Scope.WRITE}
    assert ring.scopes_of("r1") == {Scope.READ}
    assert ring.scopes_of("a1") == {Scope.ADMIN}
    assert ring.scopes_of(hash_key("w-hashed")) == set()  # knowing a stored hash is not knowing the key
    assert ring.scopes_of("w-hashed ") == set() and ring.scopes_of("ünïcode") == set()
    assert ring.write == ("w-plain",)  # the demo shop can only embed a key it knows


def test_hex_digests_are_accepted_in_either_case():
    upper = "sha256:" + hash_key("k")[len("sha256:") :].upper()
    assert KeyRing.from_settings(PulseSettings(write_keys=upper)).scopes_of("k") == {Scope.WRITE}


def test_a_malformed_hash_entry_is_a_start_up_error_that_does_not_echo_the_entry():
    with pytest.raises(KeyConfigError) as error:
        KeyRing.from_settings(PulseSettings(write_keys="ok,sha256:deadbeef-secretish"))
    assert "PULSE_WRITE_KEYS entry 2" in str(error.value) and "secretish" not in str(error.value)


def test_admin_may_do_what_read_may_and_nothing_else():
    assert grants({Scope.ADMIN}, Scope.READ) and grants({Scope.ADMIN}, Scope.ADMIN)
    assert not grants({Scope.ADMIN}, Scope.WRITE)
    assert not grants({Scope.READ}, Scope.ADMIN) and not grants({Scope.WRITE}, Scope.READ)
    assert grants({Scope.WRITE, Scope.READ}, Scope.WRITE)


def test_dev_keys_only_in_dev_mode_without_configured_keys(tmp_path):
    keys_file = tmp_path / "keys.yaml"
    keys_file.write_text(keys_yaml(("svc", "file-key", ["read"])))
    dev = KeysFollower.from_settings(PulseSettings(dev_mode=True, keys_file=keys_file))
    assert dev.scopes_of("dev-write-key") == {Scope.WRITE} and dev.scopes_of("file-key") == {Scope.READ}
    prod = KeysFollower.from_settings(PulseSettings(keys_file=keys_file))
    assert prod.scopes_of("dev-write-key") == set() and prod.scopes_of("file-key") == {Scope.READ}
    keys_file.write_text("keys: []\n")
    with pytest.raises(MissingKeysError):
        KeysFollower.from_settings(PulseSettings(keys_file=keys_file))
    with pytest.raises(MissingKeysError):
        KeysFollower.from_settings(PulseSettings())


# --- the keys file ----------------------------------------------------------------------------


def test_keys_file_in_yaml_and_json():
    text = keys_yaml(("web", "k-web", ["write"]), ("ops", "k-ops", ["admin", "write"]))
    for source in (text, json.dumps(yaml.safe_load(text))):
        entries = parse_keys_file(source)
        assert [(e.name, sorted(e.scopes)) for e in entries] == [
            ("web", [Scope.WRITE]),
            ("ops", [Scope.ADMIN, Scope.WRITE]),
        ]
    ring = KeyRing(()).with_entries(parse_keys_file(text))
    assert ring.scopes_of("k-ops") == {Scope.ADMIN, Scope.WRITE}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "is empty"),
        ("keys: [", "not valid YAML or JSON at line"),
        ("- just a list", 'must be an object with a "keys" list'),
        ("keys: []\nextra: 1", "unknown top-level field"),
        ("keys:\n- {key: plain-secret-key, scopes: [write]}", "store the key's hash, not the key"),
        ("keys:\n- {hash: 'sha256:abc', scopes: [write]}", "hash must be sha256:<64 hex digits>"),
        (f"keys:\n- {{hash: '{hash_key('k')}', scopes: [root]}}", "scopes must be a non-empty list"),
        (f"keys:\n- {{hash: '{hash_key('k')}', scopes: []}}", "scopes must be a non-empty list"),
        (f"keys:\n- {{hash: '{hash_key('k')}', scope: [write]}}", "unknown field(s) ['scope']"),
        ("keys:\n- plain-secret-key", "must be an object with hash and scopes"),
    ],
)
def test_invalid_keys_files_say_why_without_quoting_keys(text, reason):
    with pytest.raises(KeysFileError) as error:
        parse_keys_file(text)
    assert reason in str(error.value)
    assert "plain-secret-key" not in str(error.value)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def replace_file(path: Path, text: str) -> None:
    """Write like a careful operator (or a Kubernetes secret update): a new file renamed over the old."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_keys_file_is_reloaded_when_it_changes_at_most_every_refresh(tmp_path, caplog):
    path = tmp_path / "keys.yaml"
    path.write_text(keys_yaml(("old", "k-old", ["write"])))
    clock = Clock()
    follower = KeysFollower(
        KeyRing.from_settings(PulseSettings(read_keys="env-read")), path, refresh_seconds=2, clock=clock
    )
    assert follower.scopes_of("k-old") == {Scope.WRITE}

    replace_file(path, keys_yaml(("new", "k-new", ["write"])))
    clock.now += 1
    assert follower.scopes_of("k-old") == {Scope.WRITE}  # not checked yet
    clock.now += 1
    assert follower.scopes_of("k-new") == {Scope.WRITE} and follower.scopes_of("k-old") == set()
    assert follower.scopes_of("env-read") == {Scope.READ}  # the settings' keys stay

    with caplog.at_level(logging.ERROR, logger="streaming.api.keys_file"):
        path.write_text("keys:\n- {hash: broken")  # in place, half written
        clock.now += 2
        assert follower.scopes_of("k-new") == {Scope.WRITE}
        assert follower.load_errors == 1 and "keeping the 1 key(s) loaded from it before" in caplog.text
        clock.now += 2
        follower.current()
        assert follower.load_errors == 1  # an unchanged bad file is reported once

        path.unlink()
        clock.now += 2
        assert follower.scopes_of("k-new") == {Scope.WRITE} and "is gone" in caplog.text

    path.write_text("keys: []\n")  # revoking every key of the file is allowed, on purpose
    clock.now += 2
    assert follower.scopes_of("k-new") == set() and follower.scopes_of("env-read") == {Scope.READ}


def test_a_bad_keys_file_at_start_up_is_an_error(tmp_path):
    with pytest.raises(KeysFileError, match="cannot read keys file"):
        KeysFollower.from_settings(PulseSettings(keys_file=tmp_path / "missing.yaml", write_keys="w"))
    (tmp_path / "bad.yaml").write_text("keys: {}")
    with pytest.raises(KeysFileError):
        KeysFollower.from_settings(PulseSettings(keys_file=tmp_path / "bad.yaml", write_keys="w"))


# --- the API with scopes, in process ---------------------------------------------------------


class FakeProducer:
    def __init__(self) -> None:
        self.records: list[Any] = []

    async def send(self, records: list[Any]) -> None:
        self.records.extend(records)


class FakeStore:
    def __init__(self) -> None:
        self.forgotten: list[str] = []

    def get_person(self, profile_id: str) -> dict[str, Any]:
        return {"user_id": profile_id}

    def decisions_view(self, profile_id: str) -> dict[str, Any]:
        return {"user_id": profile_id, "decisions": []}

    def forget(self, profile_id: str) -> bool:
        self.forgotten.append(profile_id)
        return True

    def refused_link_count(self) -> int:  # /metrics reads it
        return 0


def api(**overrides: Any) -> tuple[TestClient, FakeProducer, FakeStore]:
    settings = PulseSettings(
        **{"write_keys": "w", "read_keys": "r", "admin_keys": hash_key("a"), **overrides}
    )
    producer, store = FakeProducer(), FakeStore()
    return TestClient(create_app(settings, producer=producer, store=store)), producer, store  # type: ignore[arg-type]


def key(value: str) -> dict[str, str]:
    return {"X-Pulse-Key": value}


def test_scopes_over_http_keep_the_contract_and_add_admin():
    client, _, store = api()
    with client:
        for path in ("/v1/profiles/u1", "/v1/decisions/u1"):
            assert client.get(path, headers=key("r")).status_code == 200
            assert client.get(path, headers=key("a")).status_code == 200
            assert client.get(path, headers=key("w")).status_code == 403
        assert client.post("/v1/events", json=EVENT, headers=key("w")).status_code == 202
        denied = client.post("/v1/events", json=EVENT, headers=key("a"))
        assert (
            denied.status_code == 403 and denied.json()["detail"] == "this key may not write: use a write key"
        )
        assert (
            client.delete("/v1/profiles/u1", headers=key("r")).status_code == 202
        )  # DESIGN: read keys forget
        assert client.delete("/v1/profiles/u2", headers=key("a")).status_code == 202
        assert client.delete("/v1/profiles/u3", headers=key("w")).status_code == 403
        assert client.get("/v1/profiles/u1", headers=key(hash_key("a"))).status_code == 401
    assert store.forgotten == ["u1", "u2"]


def test_forget_can_be_reserved_to_admin_keys():
    client, _, store = api(forget_requires_admin=True)
    with client:
        denied = client.delete("/v1/profiles/u1", headers=key("r"))
        assert denied.status_code == 403 and "admin key" in denied.json()["detail"]
        assert client.delete("/v1/profiles/u1", headers=key("a")).status_code == 202
        assert client.get("/v1/profiles/u1", headers=key("r")).status_code == 200  # reads unchanged
    assert store.forgotten == ["u1"]


def test_nothing_secret_or_personal_reaches_the_logs(caplog):
    client, producer, _ = api()
    segment = {
        "batch": [
            {"type": "track", "event": "Product Viewed", "userId": "u1", "context": {"ip": "198.51.100.23"}}
        ]
    }
    basic = {"Authorization": "Basic " + base64.b64encode(b"w:").decode()}
    with caplog.at_level(logging.DEBUG), client:
        client.post("/v1/events", json=EVENT, headers=key("w"))
        client.post("/v1/events?key=w", json=EVENT)
        client.post("/v1/events", json=EVENT, headers=key("wrong-key-value"))
        client.post("/v1/batch", json=segment, headers=basic)
        client.get("/v1/profiles/u1", headers={"Authorization": "Bearer r"})
        client.get("/v1/profiles/u1?key=r")
        client.delete("/v1/profiles/u1", headers=key("a"))
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in ("wrong-key-value", "203.0.113.77", "198.51.100.23", hash_key("a")):
        assert secret not in logged
    sent = b"".join(r.value for r in producer.records)
    assert b"203.0.113.77" not in sent and b"198.51.100.23" not in sent
    assert b'"ip":"203.0.113.0"' in sent and b'"ip":"198.51.100.0"' in sent


# --- IP anonymization -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "truncated"),
    [
        ("203.0.113.77", "203.0.113.0"),
        (" 10.1.2.3 ", "10.1.2.0"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1::"),
        ("2001:DB8:abcd:12::1%eth0", "2001:db8:abcd::"),
        ("::ffff:192.0.2.200", "192.0.2.0"),
        ("::1", "::"),
        ("not an ip", None),
        ("1.2.3", None),
        ("1.2.3.4\x00", None),
        ("user@example.com", None),
    ],
)
def test_truncate_ip(given, truncated):
    assert truncate_ip(given) == truncated


def test_hash_ip_is_keyed_stable_and_canonical():
    one = hash_ip("203.0.113.77", b"k1")
    assert one is not None and one.startswith("iphash:") and len(one) == len("iphash:") + 32
    assert hash_ip("::ffff:203.0.113.77", b"k1") == one == hash_ip(" 203.0.113.77", b"k1")
    assert hash_ip("203.0.113.77", b"k2") != one and hash_ip("203.0.113.78", b"k1") != one
    assert hash_ip("nope", b"k1") is None


def test_anonymizer_modes_and_the_hash_key():
    with pytest.raises(IPHashKeyMissing):
        IPAnonymizer.from_settings(PulseSettings(ip_anonymization="hash"))
    hashed = IPAnonymizer.from_settings(PulseSettings(ip_anonymization="hash", ip_hash_key="s3cret"))
    assert hashed.address("203.0.113.77") == hash_ip("203.0.113.77", b"s3cret")
    assert IPAnonymizer("none").address("203.0.113.77") == "203.0.113.77"
    assert IPAnonymizer("truncate").address(12345) is None

    original = {**EVENT, "metadata": {**EVENT["metadata"]}}
    scrubbed = IPAnonymizer("truncate").scrub(original)
    assert scrubbed["metadata"] == {"ip": "203.0.113.0", "category": "shoes"}
    assert original["metadata"]["ip"] == "203.0.113.77"  # the input is not modified
    dropped = IPAnonymizer("truncate").scrub({**EVENT, "metadata": {"ip": "someone@example.com"}})
    assert dropped["metadata"] == {}
    assert IPAnonymizer("truncate").scrub("not an object") == "not an object"
    assert IPAnonymizer("none").scrub(original) is original


def test_plan_ingest_anonymizes_events_and_dead_letters_alike():
    invalid = {**EVENT, "event_type": "", "metadata": {"ip": "198.51.100.23"}}
    segment = Unmappable(
        {"type": "group", "context": {"ip": "2001:db8:1:2::9"}}, "group calls are not mapped"
    )
    plan = plan_ingest(
        [EVENT, invalid, segment],
        received_at="t",
        events_topic="ev",
        dlq_topic="dlq",
        anonymize=IPAnonymizer("truncate").scrub,
    )
    values = [msgspec.json.decode(r.value) for r in plan.records]
    assert [r.topic for r in plan.records] == ["ev", "dlq", "dlq"]
    assert values[0]["metadata"]["ip"] == "203.0.113.0"
    assert values[1]["metadata"]["ip"] == "198.51.100.0"
    assert values[2]["context"]["ip"] == "2001:db8:1::"


def test_truncation_keeps_every_sample_geo_answer_except_the_two_split_documentation_nets():
    rows = list(csv.DictReader(SAMPLE_GEO.open()))
    geo = GeoIndex.from_rows(rows)
    changed = {
        ip
        for row in rows
        for ip in (row["start_ip"], row["end_ip"])
        if geo.lookup(ip) != geo.lookup(truncate_ip(ip))
    }
    # 192.0.2.0/24 and 203.0.113.0/24 are split into /25s; every other range is a /24 or wider (/48 for IPv6).
    assert changed == {"192.0.2.128", "192.0.2.255", "203.0.113.128", "203.0.113.255"}
    assert geo.lookup(truncate_ip("203.0.113.200"))["country"] == "JP"  # Sydney's half reads as Tokyo


# --- settings, limiter, CLI ---------------------------------------------------------------------


def test_secrets_reach_child_processes_but_not_reprs():
    settings = PulseSettings(
        ip_anonymization="hash", ip_hash_key="s3cret", admin_keys="a1,a2", keys_file="/k.yaml"
    )
    env = settings_to_env(settings)
    assert env["PULSE_IP_HASH_KEY"] == "s3cret" and env["PULSE_ADMIN_KEYS"] == "a1,a2"
    assert env["PULSE_IP_ANONYMIZATION"] == "hash" and env["PULSE_KEYS_FILE"] == "/k.yaml"
    assert "s3cret" not in repr(settings)
    assert PulseSettings().ip_anonymization == "truncate"


def test_rate_limiter_keeps_digests_not_keys():
    limiter = RateLimiter(rate=1, burst=2, clock=lambda: 0.0)
    assert limiter.allow("the-key", 2) and not limiter.allow("the-key") and limiter.allow("other-key")
    assert all(isinstance(k, bytes) and len(k) == 32 for k in limiter._buckets)


def test_pulse_keys_hash_and_new():
    runner = CliRunner()
    assert runner.invoke(cli, ["keys", "hash", "k1"]).output == hash_key("k1") + "\n"
    piped = runner.invoke(cli, ["keys", "hash"], input="k1\nk2\n")
    assert piped.output.split() == [hash_key("k1"), hash_key("k2")]
    assert runner.invoke(cli, ["keys", "hash"], input="").exit_code == 2

    made = runner.invoke(cli, ["keys", "new", "--scope", "read", "--scope", "admin", "--name", "backend"])
    assert made.exit_code == 0
    new_key = made.stderr.rsplit(": ", 1)[1].strip()
    entries = parse_keys_file("keys:\n" + made.stdout)
    assert len(new_key) >= 43 and entries[0].name == "backend"
    assert KeyRing(()).with_entries(entries).scopes_of(new_key) == {Scope.READ, Scope.ADMIN}
