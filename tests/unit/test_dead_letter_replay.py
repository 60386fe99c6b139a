"""The replay's at-most-once bookkeeping against a broker that acknowledges, refuses or never answers."""

import json

import pytest

from assets.dead_letter_ledger import DONE, PENDING, RELEASED, Coordinates, ReplayLedger
from assets.dead_letter_replay import DeadLetterReplayIncomplete, DeadLetterReplaySummary, _send, _triage
from assets.dead_letters import DeadLetter
from tests.unit.test_event_contract import event


class FakeProducer:
    """Answers each produce per ``verdicts`` (offset -> "ack" | "refuse" | "silent") at flush."""

    def __init__(self, verdicts: dict[int, str]) -> None:
        self.verdicts = verdicts
        self.sent: list[bytes] = []
        self._callbacks = []

    def produce(self, topic, value, key, on_delivery):
        self.sent.append(value)
        self._callbacks.append((json.loads(value)["event_id"], on_delivery))

    def poll(self, _timeout):
        return 0

    def flush(self, _timeout):
        silent = 0
        for index, (_, callback) in enumerate(self._callbacks):
            verdict = self.verdicts.get(index, "ack")
            if verdict == "silent":
                silent += 1
            else:
                callback(None if verdict == "ack" else "broker says no", None)
        self._callbacks = []
        return silent


def letters(n: int) -> list[DeadLetter]:
    return [
        DeadLetter(Coordinates("dlq", 0, i), json.dumps(event()).encode(), "x", "collector", None)
        for i in range(n)
    ]


def triage_all(ledger, batch, retry_in_doubt=False):
    summary = DeadLetterReplaySummary()
    ready = [_triage(d, ledger, None, {}, retry_in_doubt, summary) for d in batch]
    return [r for r in ready if r is not None], summary


def test_acknowledged_are_done_refused_released_unanswered_in_doubt(tmp_path):
    path = tmp_path / "ledger.jsonl"
    batch = letters(3)
    with ReplayLedger.locked(path) as ledger:
        ready, summary = triage_all(ledger, batch)
        with pytest.raises(DeadLetterReplayIncomplete, match="refused 1 and did not answer for 1 of 3"):
            _send(FakeProducer({1: "refuse", 2: "silent"}), "ev", ready, ledger, summary)
        assert summary.republished == 1
        assert [ledger.state(d.coordinates) for d in batch] == [DONE, RELEASED, PENDING]

    with ReplayLedger.locked(path) as ledger:
        ready, summary = triage_all(ledger, batch)
        assert [r.coordinates.offset for r in ready] == [1]  # the refused one only
        assert (summary.already_replayed, summary.in_doubt) == (1, 1)
        ready, summary = triage_all(ledger, batch, retry_in_doubt=True)
        assert [r.coordinates.offset for r in ready] == [1, 2]
        _send(FakeProducer({}), "ev", ready, ledger, summary)
        assert [ledger.state(d.coordinates) for d in batch] == [DONE, DONE, DONE]


def test_a_dry_run_sends_and_records_nothing(tmp_path):
    path = tmp_path / "ledger.jsonl"
    with ReplayLedger.locked(path) as ledger:
        ready, summary = triage_all(ledger, letters(2))
        _send(None, "ev", ready, ledger, summary)
        assert summary.republished == 2 and ledger.state(Coordinates("dlq", 0, 0)) is None
    assert not path.exists()
