"""The replay ledger: which dead letters `pulse dlq replay` has republished, kept beside the archive.

One JSON line per state change of a dead letter (its DLQ coordinates), appended and fsynced:
``pending`` before its fixed event is produced, ``done`` once the broker acknowledged it,
``released`` when the broker refused it (it may be replayed again). A dead letter left
``pending`` by a run that stopped is *in doubt*: it may have reached the broker, so it is not
sent again unless asked (the event_id marker makes a duplicate harmless within the dedupe window).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, NamedTuple

from core.archive_layout import dead_letters_folder

logger = logging.getLogger(__name__)

PENDING, DONE, RELEASED = "pending", "done", "released"


class Coordinates(NamedTuple):
    """A dead letter's place in the DLQ topic."""

    topic: str
    partition: int
    offset: int


def ledger_path(archive_root: Path) -> Path:
    """Where the ledger of an archive lives."""
    return dead_letters_folder(archive_root) / "replay-ledger.jsonl"


class ReplayLedger:
    """States of replayed dead letters; open with ``ReplayLedger.locked(path)``."""

    def __init__(self, path: Path, states: dict[Coordinates, str]) -> None:
        self._path = path
        self._states = states

    @classmethod
    @contextmanager
    def locked(cls, path: Path) -> Iterator[ReplayLedger]:
        """Read the ledger holding its lock, so two replays never send the same dead letter."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield cls(path, read_states(path))
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def state(self, coordinates: Coordinates) -> str | None:
        """The latest state of a dead letter, None if never replayed."""
        return self._states.get(coordinates)

    def record(self, state: str, entries: Iterable[Coordinates]) -> None:
        """Append ``state`` for each entry and fsync before returning."""
        entries = list(entries)
        if not entries:
            return
        lines = "".join(json.dumps({"state": state, **c._asdict()}) + "\n" for c in entries).encode()
        with open(self._path, "a+b") as file:
            if file.seek(0, os.SEEK_END) and _last_byte(file) != b"\n":
                lines = b"\n" + lines  # end a line a crash cut short, so it stays one bad line
            file.write(lines)
            file.flush()
            os.fsync(file.fileno())
        for coordinates in entries:
            self._states[coordinates] = state


def read_states(path: Path) -> dict[Coordinates, str]:
    """The latest state of every dead letter in a ledger file (empty when there is none)."""
    states: dict[Coordinates, str] = {}
    if not path.exists():
        return states
    with open(path) as file:
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                states[Coordinates(entry["topic"], int(entry["partition"]), int(entry["offset"]))] = entry[
                    "state"
                ]
            except (ValueError, KeyError, TypeError):
                # Only a crash mid-write cuts a line short. A cut ``pending`` was never followed by
                # a send; a cut ``done`` leaves its record ``pending`` (in doubt): both stay safe.
                logger.warning("ignoring line %d of %s, cut short by a crash: %r", number, path, line[:80])
    return states


def _last_byte(file: BinaryIO) -> bytes:
    file.seek(-1, os.SEEK_END)
    return file.read(1)
