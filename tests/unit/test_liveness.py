"""The status file behind `pulse probe`: written from librdkafka statistics, judged by age and group state."""

from __future__ import annotations

import json

from click.testing import CliRunner

from orchestration.cli import cli
from streaming.liveness import AppStatus, StatusWriter, judge, read_status, status_path

STEADY = {"cgrp": {"state": "up", "join_state": "steady", "assignment_size": 3}}
JOINING = {"cgrp": {"state": "up", "join_state": "wait-sync", "assignment_size": 0}}


def test_the_writer_records_the_group_state_atomically(tmp_path):
    path = status_path(tmp_path, "profile-app")
    StatusWriter(path)(json.dumps(STEADY))
    status = read_status(path)
    assert status is not None and status.joined and status.assigned == 3
    assert not list(path.parent.glob("*.tmp"))


def test_a_fresh_steady_member_is_live_and_ready():
    status = AppStatus(
        at=100.0, pid=1, group_state="up", join_state="steady", assigned=0
    )  # idle member: still ready
    assert judge(status, 110.0, 60, ready=True)[0]


def _statically_assigned(fetch_state: str) -> dict:
    """librdkafka's statistics of a consumer that assigned itself a partition (no group join)."""
    partitions = {
        "0": {"desired": True, "fetch_state": fetch_state},
        "-1": {"desired": False, "fetch_state": "none"},
    }
    return {
        "cgrp": {"state": "up", "join_state": "init", "assignment_size": 0},
        "topics": {"pulse.events": {"partitions": partitions}},
    }


def test_an_app_reading_partitions_it_assigned_itself_is_ready(tmp_path):
    """`pulse up`'s apps assign their partitions without a group join (streaming/static_assignment.py)."""
    path = status_path(tmp_path, "profile-app")
    StatusWriter(path)(json.dumps(_statically_assigned("active")))
    status = read_status(path)
    assert status is not None and status.assigned == 1 and status.assigned_without_group == 1
    healthy, why = judge(status, status.at + 1, 60, ready=True)
    assert healthy and "without a group join" in why


def test_a_consumer_before_its_first_join_or_assignment_is_not_ready(tmp_path):
    path = status_path(tmp_path, "archiver")
    StatusWriter(path)(json.dumps(_statically_assigned("offset-query")))
    status = read_status(path)
    assert status is not None and not status.joined
    assert not judge(status, status.at + 1, 60, ready=True)[0]


def test_a_stale_status_fails_liveness():
    status = AppStatus(at=100.0, pid=1, group_state="up", join_state="steady", assigned=1)
    healthy, why = judge(status, 200.0, 60, ready=False)
    assert not healthy and "100s ago" in why


def test_a_member_still_joining_is_live_but_not_ready():
    status = AppStatus(at=100.0, pid=1, group_state="up", join_state="wait-sync", assigned=0)
    assert judge(status, 101.0, 60, ready=False)[0]
    healthy, why = judge(status, 101.0, 60, ready=True)
    assert not healthy and "wait-sync" in why


def test_no_or_a_torn_status_file_fails(tmp_path):
    path = status_path(tmp_path, "archiver")
    assert not judge(read_status(path), 0.0, 60, ready=False)[0]
    path.parent.mkdir(parents=True)
    path.write_text('{"at": 1')
    assert read_status(path) is None


def test_the_probe_command_exits_by_the_verdict(tmp_path, monkeypatch):
    monkeypatch.setenv("PULSE_DATA_DIR", str(tmp_path))
    runner = CliRunner()
    missing = runner.invoke(cli, ["probe", "profile-app"])
    assert missing.exit_code == 1 and "FAIL" in missing.output
    StatusWriter(status_path(tmp_path, "profile-app"))(json.dumps(JOINING))
    assert runner.invoke(cli, ["probe", "profile-app"]).exit_code == 0
    not_ready = runner.invoke(cli, ["probe", "profile-app", "--ready"])
    assert not_ready.exit_code == 1 and "joining" in not_ready.output
