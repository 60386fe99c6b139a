"""The forget rule (Python and SQL alike), the durable forget record, and the report (pure parts)."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import duckdb

from assets.forget import row_forgotten_id
from assets.forget_report import build_report
from core.forget_record import ForgetRecord
from core.forgetting import (
    SUPPRESSIONS_TABLE,
    forgotten_sql,
    is_forgotten,
    merge_suppressions,
    suppressions_table,
)

T = 1_700_000_000_000


def test_an_event_at_or_before_the_forget_time_is_forgotten_a_later_one_is_not():
    forgotten = {"u1": T}
    assert is_forgotten("u1", T - 1, forgotten)
    assert is_forgotten("u1", T, forgotten)  # at the forget time: forgotten
    assert not is_forgotten("u1", T + 1, forgotten)  # the person came back
    assert not is_forgotten("u2", T - 1, forgotten)
    assert not is_forgotten(None, T - 1, forgotten)


def test_the_sql_rule_agrees_with_the_python_rule():
    forgotten = {"u1": T, "a{1}": T + 5}
    rows = [(pid, ms) for pid in ("u1", "a{1}", "u2") for ms in (T - 1, T, T + 1, T + 5, T + 6)]
    with duckdb.connect() as con:
        con.register(SUPPRESSIONS_TABLE, suppressions_table(forgotten))
        got = [
            con.execute(f"SELECT {forgotten_sql('?', '?::BIGINT')}", [pid, ms]).fetchone()[0]
            for pid, ms in rows
        ]
    assert got == [is_forgotten(pid, ms, forgotten) for pid, ms in rows]
    assert sum(got) == 2 + 4  # u1 at T-1 and T; a{1} up to T+5


def test_a_second_forget_of_an_id_extends_the_first():
    assert merge_suppressions([("u1", T), ("u1", T + 10), ("u1", T + 5), ("a1", T)]) == {
        "u1": T + 10,
        "a1": T,
    }


def test_the_record_reads_what_was_appended_and_ignores_a_line_cut_by_a_crash(tmp_path):
    record = ForgetRecord(tmp_path / "forget")
    assert record.forgets() == [] and record.suppressions() == {}
    record.append_forget("a1", ["u1", "a1"], T)
    record.append_forget("u1", ["u1"], T + 7)
    with record.suppressions_file.open("ab") as f:
        f.write(b'{"requested": "u9", "ids": ["u9"], "at_')  # a crash mid-append
    assert record.suppressions() == {"u1": T + 7, "a1": T}
    assert [f["requested"] for f in record.forgets()] == ["a1", "u1"]
    assert record.suppressions_file.stat().st_mode & 0o777 == 0o600
    # The next append ends the cut line first: its own line stays whole.
    record.append_forget("u2", ["u2"], T + 9)
    assert record.suppressions() == {"u1": T + 7, "a1": T, "u2": T + 9}


def test_the_record_read_from_an_offset_has_only_the_later_forgets(tmp_path):
    record = ForgetRecord(tmp_path)
    record.append_forget("u1", ["u1"], T)
    middle = record.size()
    record.append_forget("u2", ["u2", "a2"], T + 1)
    assert record.suppressions_from(middle) == ({"u2": T + 1, "a2": T + 1}, record.size())
    assert record.suppressions_from(record.size()) == ({}, record.size())


def _append_many(folder: str, worker: int) -> None:
    record = ForgetRecord(Path(folder))
    for i in range(50):
        record.append_forget(f"u{worker}-{i}", [f"u{worker}-{i}", "x" * 5000], T + i)


def test_appends_from_several_processes_never_interleave(tmp_path):
    """Several API processes share the folder: every line stays whole (flock + one write each)."""
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append_many, args=(str(tmp_path), w)) for w in range(4)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(60)
        assert p.exitcode == 0
    lines = (tmp_path / "suppressions.jsonl").read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 201
    assert {json.loads(line)["requested"] for line in lines[:-1]} == {
        f"u{w}-{i}" for w in range(4) for i in range(50)
    }


def test_a_row_is_purged_for_either_id_it_names_up_to_that_ids_forget_time():
    forgotten = {"u1": T, "a1": T + 10}
    assert row_forgotten_id(True, "u1", None, T, forgotten) == "u1"
    assert row_forgotten_id(True, "u1", None, T + 1, forgotten) is None
    assert row_forgotten_id(True, "u2", "a1", T + 10, forgotten) == "a1"  # another user's event naming a1
    assert row_forgotten_id(True, "u1", "a1", T + 5, forgotten) == "a1"
    assert row_forgotten_id(False, None, None, T, forgotten) is None


def test_the_report_says_what_each_store_erased_and_when_the_broker_lets_go():
    forgets = [
        {"requested": "u0", "ids": ["u0"], "at_ms": T - 100},
        {"requested": "a1", "ids": ["u1", "a1"], "at_ms": T},
    ]
    erasures = [
        {"store": "redis", "at_ms": T, "requested": "a1", "ids": ["u1", "a1"], "keys_deleted": 6},
        {"store": "archive", "at_ms": T + 50, "forgets_read": 1, "per_id": {"u0": {"valid": 9}}},
        {
            "store": "archive",
            "at_ms": T + 3_600_000,
            "forgets_read": 2,
            "per_id": {"u1": {"valid": 4, "dead_letters": 1}, "a1": {"invalid": 2, "duckdb_sessions": 1}},
        },
    ]
    report = build_report(
        "u1", forgets, erasures, {"u1": (T, 3), "a1": (T, 1)}, {"pulse.events": 604_800_000}, 3600
    )
    assert report["ids"] == ["a1", "u1"] and report["forgotten_at"] == "2023-11-14T22:13:20.000Z"
    assert report["redis"] == {
        "keys_deleted": 6,
        "suppressed": True,
        "events_skipped_by_stream": 4,
        "dedupe_markers_expire_by": "2023-11-14T23:13:20.000Z",
    }
    assert report["archive"]["purged"] is True
    assert report["archive"]["purged_at"] == "2023-11-14T23:13:20.000Z"
    assert report["archive"]["rows_erased"] == {"valid": 4, "invalid": 2, "dead_letters": 1}
    assert report["duckdb"]["rows_erased"] == {"profiles_batch": 0, "sessions": 1}
    assert report["broker"]["pulse.events"] == {
        "retention_ms": 604_800_000,
        "held_until": "2023-11-21T22:13:20.000Z",
    }
    # Before a run read its forget, the archive purge is pending; a mirror that lost it says so.
    pending = build_report("u1", forgets, erasures[:2], {"u1": None, "a1": (T, 0)}, {}, 3600)
    assert pending["archive"]["purged"] is False and pending["redis"]["suppressed"] is False
    assert build_report("u7", forgets, erasures, {}, {}, 3600) == {"profile_id": "u7", "forgotten": False}


def test_forgets_for_a_purpose_suppress_but_are_not_erased(tmp_path):
    record = ForgetRecord(tmp_path)
    record.append_forget("u1", ["u1", "a1"], T, purpose="personalization")
    record.append_forget("u2", ["u2"], T + 1)
    record.append_forget("u1", ["u1"], T + 2)  # later forgotten for good
    assert record.suppressions() == {"u1": T + 2, "a1": T, "u2": T + 1}
    assert record.erased_suppressions() == {"u2": T + 1, "u1": T + 2}
    assert record.purpose_suppressions() == {"u1": T, "a1": T}
