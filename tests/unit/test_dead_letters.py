"""Pure parts of dead letters as data: archive rows, reasons, fixes, re-validation, the ledger."""

import json
import sys
import textwrap

import pytest

from assets.dead_letter_fixes import FixSpecError, load_fix, reason_kind, revalidate
from assets.dead_letter_ledger import DONE, PENDING, RELEASED, Coordinates, ReplayLedger, read_states
from streaming.archiver.dead_letters import dead_letter_row
from streaming.dlq import Origin, dlq_headers
from tests.unit.test_event_contract import event

AT = "2024-04-25T14:23:05.123Z"


def test_dead_letter_row_carries_bytes_reason_source_time_origin_and_ids():
    raw = json.dumps(
        {"user_id": "u1", "anonymous_id": "a1", "event_type": "purchase", "event_id": "x"}
    ).encode()
    headers = dlq_headers(
        "purchase needs metadata.order_id", "profile-app", AT, Origin("pulse.events", 2, 41)
    )
    row = dead_letter_row(raw, headers, "pulse.events.dlq", 0, 7, 1_714_000_000_000)
    assert row["raw"] == raw and row["valid"] is False
    assert (row["error"], row["source"], row["received_at"]) == (
        "purchase needs metadata.order_id",
        "profile-app",
        1714054985123,
    )
    assert (row["origin_topic"], row["origin_partition"], row["origin_offset"]) == ("pulse.events", 2, 41)
    assert (row["kafka_topic"], row["kafka_partition"], row["kafka_offset"]) == ("pulse.events.dlq", 0, 7)
    assert (row["user_id"], row["anonymous_id"], row["event_type"], row["event_id"]) == (
        "u1",
        "a1",
        "purchase",
        "x",
    )
    assert row["event_time"] == 1_714_000_000_000  # filed by arrival at the DLQ


def test_dead_letter_row_of_segment_garbage_and_missing_headers():
    segment = dead_letter_row(b'{"userId": "u2", "anonymousId": 5, "messageId": "m"}', None, "dlq", 0, 1, 0)
    assert (segment["user_id"], segment["anonymous_id"], segment["event_id"]) == ("u2", None, "m")
    assert segment["source"] == "unknown" and "no pulse.error header" in segment["error"]
    assert segment["origin_topic"] is None and segment["received_at"] is None
    garbage = dead_letter_row(
        b"\xff{not json", dlq_headers("invalid JSON: x", "collector", "bad time"), "dlq", 0, 2, 0
    )
    assert garbage["user_id"] is None and garbage["received_at"] is None and garbage["source"] == "collector"
    assert dead_letter_row(None, None, "dlq", 0, 3, 0)["raw"] == b""


@pytest.mark.parametrize(
    "error, kind",
    [
        ("event_id must be a UUID, got 'abc'", "event_id must be a UUID"),
        (
            "timestamp '2024-01-01' has no timezone (add Z or +00:00)",
            "timestamp … has no timezone (add Z or +00:00)",
        ),
        ("event is 40000 bytes; the limit is 32768", "event is N bytes; the limit is N"),
        ("invalid JSON: JSON is malformed: invalid character (byte 4)", "invalid JSON"),
        (None, "unknown"),
    ],
)
def test_reason_kind_groups_by_reason_without_values(error, kind):
    assert reason_kind(error) == kind


def test_revalidate_without_fix_keeps_received_at_and_keys_by_profile():
    good = revalidate(json.dumps(event()).encode(), None, AT)
    assert good.error is None and good.key == b"u1"
    assert json.loads(good.value) == {**event(), "received_at": AT}
    bad = revalidate(json.dumps(event(event_id="nope")).encode(), None, AT)
    assert bad.value is None and "event_id must be a UUID" in bad.error
    assert "invalid JSON" in revalidate(b"{", None, AT).error


def test_revalidate_with_python_fix_patch_and_declining_fix(tmp_path):
    broken = json.dumps(event(event_type="purchase", metadata={"price": 3})).encode()
    fixed = revalidate(broken, lambda e: {**e, "metadata": {**e["metadata"], "order_id": "o1"}}, AT)
    assert fixed.error is None and json.loads(fixed.value)["metadata"] == {"price": 3, "order_id": "o1"}
    patch = tmp_path / "fix.json"
    patch.write_text(json.dumps([{"op": "add", "path": "/metadata/order_id", "value": "o2"}]))
    assert json.loads(revalidate(broken, load_fix(str(patch)), AT).value)["metadata"]["order_id"] == "o2"
    assert revalidate(broken, lambda e: None, AT).declined
    raising = revalidate(broken, lambda e: e["nope"], AT)
    assert raising.error == "the fix raised KeyError: 'nope'"
    still_bad = revalidate(broken, lambda e: e, AT)
    assert still_bad.error == "purchase needs metadata.order_id"
    not_applying = revalidate(b"[1]", load_fix(str(patch)), AT)
    assert not_applying.error.startswith("the patch does not apply")


def test_load_fix_names_what_is_wrong(tmp_path, monkeypatch):
    (tmp_path / "my_fixes.py").write_text(textwrap.dedent("def fix(e):\n    return e\n"))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_fix("my_fixes:fix")({"a": 1}) == {"a": 1}
    with pytest.raises(FixSpecError, match="has no function 'nope'"):
        load_fix("my_fixes:nope")
    with pytest.raises(FixSpecError, match="cannot import 'no_such_module_x'"):
        load_fix("no_such_module_x:fix")
    with pytest.raises(FixSpecError, match="module:function"):
        load_fix("just_a_name")
    with pytest.raises(FixSpecError, match="cannot read"):
        load_fix(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text('{"op": "add"}')
    with pytest.raises(FixSpecError, match="is not a JSON patch"):
        load_fix(str(tmp_path / "bad.json"))
    sys.modules.pop("my_fixes", None)


def test_ledger_keeps_the_latest_state_durably(tmp_path):
    path = tmp_path / "dead_letters" / "replay-ledger.jsonl"
    a, b, c = (Coordinates("dlq", 0, n) for n in range(3))
    with ReplayLedger.locked(path) as ledger:
        assert ledger.state(a) is None
        ledger.record(PENDING, [a, b, c])
        ledger.record(DONE, [a])
        ledger.record(RELEASED, [b])
        assert (ledger.state(a), ledger.state(b), ledger.state(c)) == (DONE, RELEASED, PENDING)
    assert read_states(path) == {a: DONE, b: RELEASED, c: PENDING}


def test_ledger_survives_a_line_cut_short_by_a_crash(tmp_path):
    path = tmp_path / "ledger.jsonl"
    a, b = Coordinates("dlq", 0, 0), Coordinates("dlq", 0, 1)
    with ReplayLedger.locked(path) as ledger:
        ledger.record(DONE, [a])
    with open(path, "a") as file:
        file.write('{"state": "done", "topic": "dlq", "parti')  # the crash
    with ReplayLedger.locked(path) as ledger:
        assert ledger.state(a) == DONE
        ledger.record(DONE, [b])
    assert read_states(path) == {a: DONE, b: DONE}
