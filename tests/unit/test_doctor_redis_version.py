"""`pulse doctor` names the Redis version and fails a server too old for functions."""

from __future__ import annotations

from orchestration import doctor


class _Server:
    def __init__(self, info: dict) -> None:
        self._info = info

    def ping(self) -> bool:
        return True

    def get(self, _key: str) -> None:
        return None

    def info(self, _section: str) -> dict:
        return self._info


def test_the_version_of_one_server_and_the_lowest_of_a_cluster():
    assert doctor.server_version({"redis_version": "7.2.4"}) == "7.2.4"
    cluster = {"127.0.0.1:7000": {"redis_version": "7.4.1"}, "127.0.0.1:7001": {"redis_version": "7.0.15"}}
    assert doctor.server_version(cluster) == "7.0.15"
    assert doctor.server_version({}) is None


def test_redis_6_fails_the_check_with_the_fix(monkeypatch):
    monkeypatch.setattr(doctor, "redis_from_url", lambda *_a, **_k: _Server({"redis_version": "6.2.14"}))
    [check] = doctor._check_redis("redis://old:6379/0")
    assert not check.ok
    assert "6.2.14" in check.detail and "7.0 or newer" in check.fix


def test_redis_7_passes_and_is_named(monkeypatch):
    monkeypatch.setattr(doctor, "redis_from_url", lambda *_a, **_k: _Server({"redis_version": "7.2.4"}))
    checks = doctor._check_redis("redis://new:6379/0")
    assert checks[0].ok and "Redis 7.2.4" in checks[0].detail
