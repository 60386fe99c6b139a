"""The durable forget record (I/O): append-only, fsynced JSON-lines files outside Redis.

``suppressions.jsonl`` has one line per forget: the ids of the person and the forget time. The
API appends it (and waits for the disk) before it answers a DELETE, and Redis only mirrors it
for the stream (streaming/profiles/suppression.py), so a Redis loss loses no forget.
``erasures.jsonl`` says what each store erased: the API's Redis keys, each forget run's archive
rows. Appends take an exclusive ``flock`` and write each line in one ``write``: several API
processes and the Dagster forget run may share the folder (on one machine, or a file system
with working ``flock``). A line cut by a crash is ended by the next append and ignored.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from pathlib import Path
from typing import Any

from core.forgetting import merge_suppressions

logger = logging.getLogger(__name__)

SUPPRESSIONS_FILE = "suppressions.jsonl"
ERASURES_FILE = "erasures.jsonl"


class ForgetRecord:
    """The forget record in ``folder`` (created on the first append)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @property
    def suppressions_file(self) -> Path:
        return self.folder / SUPPRESSIONS_FILE

    @property
    def erasures_file(self) -> Path:
        return self.folder / ERASURES_FILE

    def append_forget(self, requested: str, ids: list[str], at_ms: int, purpose: str | None = None) -> None:
        """Record that ``ids`` (``requested``'s person) were forgotten at ``at_ms``; durable on return.

        ``purpose``: forgotten for that purpose only (``personalization``: a withdrawn consent), so
        no profile counts the events again but the archive keeps them (``erased_suppressions``)."""
        entry: dict[str, Any] = {"requested": requested, "ids": ids, "at_ms": at_ms}
        if purpose is not None:
            entry["purpose"] = purpose
        self._append(self.suppressions_file, entry)

    def append_erasure(self, entry: dict[str, Any]) -> None:
        """Record what one store erased (see ``erasures``); durable on return."""
        self._append(self.erasures_file, entry)

    def forgets(self) -> list[dict[str, Any]]:
        """Every forget recorded, oldest first: {requested, ids, at_ms}."""
        return _read(self.suppressions_file)

    def suppressions(self) -> dict[str, int]:
        """Each forgotten id's latest forget time (epoch ms)."""
        return self.suppressions_from(0)[0]

    def erased_suppressions(self) -> dict[str, int]:
        """Each id's latest forget time among the forgets that erase it everywhere (no ``purpose``):
        what the forget run purges from the archive."""
        pairs = [
            (str(i), int(e["at_ms"]))
            for e in self.forgets()
            if "at_ms" in e and not e.get("purpose")
            for i in e.get("ids", ())
        ]
        return merge_suppressions(pairs)

    def purpose_suppressions(self) -> dict[str, int]:
        """Each id's latest forget time among the forgets for one purpose only (withdrawn consent)."""
        pairs = [
            (str(i), int(e["at_ms"]))
            for e in self.forgets()
            if "at_ms" in e and e.get("purpose")
            for i in e.get("ids", ())
        ]
        return merge_suppressions(pairs)

    def suppressions_from(self, offset: int) -> tuple[dict[str, int], int]:
        """(the suppressions of the forgets recorded from byte ``offset`` on, the offset read up to):
        what a mirror that has copied the record up to ``offset`` still lacks."""
        entries, end = _read_from(self.suppressions_file, offset)
        pairs = [(str(i), int(e["at_ms"])) for e in entries if "at_ms" in e for i in e.get("ids", ())]
        return merge_suppressions(pairs), end

    def size(self) -> int:
        """Bytes of the suppressions file (0 before the first forget)."""
        try:
            return self.suppressions_file.stat().st_size
        except FileNotFoundError:
            return 0

    def erasures(self) -> list[dict[str, Any]]:
        """Every erasure recorded, oldest first: {store, at_ms, ...} (store "redis" or "archive")."""
        return _read(self.erasures_file)

    def _append(self, path: Path, entry: dict[str, Any]) -> None:
        created = not path.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(entry, separators=(",", ":"), sort_keys=True) + "\n").encode()
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    line = b"\n" + line  # end a line cut by a crash, so this one stays whole
                written = os.write(fd, line)
                if written != len(line):
                    raise OSError(f"short write to {path}: {written} of {len(line)} bytes")
                os.fsync(fd)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        if created:  # the new file's name must survive a crash too
            dir_fd = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


def _read(path: Path) -> list[dict[str, Any]]:
    return _read_from(path, 0)[0]


def _read_from(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """The entries of the whole lines from byte ``offset`` on, and the offset after the last of them."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], offset
    lines = data.split(b"\n")
    if lines[-1]:  # a crash mid-append, or an append in progress: read it next time
        logger.debug("%s ends in a partial line; leaving it", path)
    end = offset + len(data) - len(lines[-1])
    entries = []
    for number, line in enumerate(lines[:-1], 1):
        try:
            entry = json.loads(line)
        except ValueError:
            logger.warning("%s line %d is not JSON; ignoring it", path, number)
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries, end
