"""Embedded services start on a port of their own: a port taken meanwhile is detected, then avoided."""

from __future__ import annotations

import socket

import pytest
import redis

from orchestration import local_services
from orchestration.local_services import PortTaken, free_port, start_redis

pytestmark = pytest.mark.integration


@pytest.fixture
def squatter():
    """A listener holding a port, as another program that bound it between pick and start would."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", free_port()))
        sock.listen()
        yield sock.getsockname()[1]


def test_free_port_picks_below_the_kernels_ephemeral_range():
    low, _ = local_services._ephemeral_range()
    assert all(local_services._LOWEST_PICK <= free_port() < low for _ in range(20))


def test_a_service_whose_port_another_process_answers_on_is_refused(tmp_path, squatter):
    with pytest.raises(PortTaken, match=f"another process listens on 127.0.0.1:{squatter}"):
        start_redis(tmp_path, port=squatter, persist=False)


def test_a_picked_port_taken_meanwhile_is_retried_on_another(tmp_path, squatter, monkeypatch):
    picks = iter([squatter])
    real_free_port = local_services.free_port
    monkeypatch.setattr(local_services, "free_port", lambda: next(picks, None) or real_free_port())
    proc, url = start_redis(tmp_path, persist=False)
    try:
        assert f":{squatter}/" not in url
        assert proc.listens_on(int(url.rsplit(":", 1)[1].split("/")[0]))
        assert redis.Redis.from_url(url).ping()
    finally:
        proc.stop()


def test_the_embedded_valkeys_aof_rewrite_runs_at_the_lowest_priority(tmp_path):
    """What `pulse up`'s supervisor does for its Valkey (orchestration/fork_priority.py)."""
    import os
    import time

    from orchestration.fork_priority import FORK_NICENESS, ForkPriority

    proc, url = start_redis(tmp_path, persist=True)
    try:
        client = redis.Redis.from_url(url)
        client.mset({f"k{i}": "v" for i in range(2000)})
        client.config_set("rdb-key-save-delay", 1000)  # µs per key: the rewrite lasts ~2 s
        client.bgrewriteaof()
        forks = ForkPriority(proc.pid)
        deadline, lowered = time.monotonic() + 10, []
        while not lowered and time.monotonic() < deadline:
            lowered = forks.lower()
            time.sleep(0.01)
        assert len(lowered) == 1, "no rewrite child seen"
        assert os.getpriority(os.PRIO_PROCESS, lowered[0]) == FORK_NICENESS
        assert os.getpriority(os.PRIO_PROCESS, proc.pid) == os.getpriority(os.PRIO_PROCESS, 0)  # untouched
    finally:
        proc.stop()
