"""The durable forget record (I/O): append-only, fsynced JSON-lines files outside Redis.

``suppressions.jsonl`` has one line per forget: the ids of the person and the forget time. The
API appends it (and waits for the disk) before it answers a DELETE, and Redis only mirrors it
for the stream (streaming/profiles/suppression.py), so a Redis loss loses no forget.
``erasures.jsonl`` says what each store erased: the API's Redis keys, each forget run's archive
rows. Appends take an exclusive ``flock`` and write each line in one ``write``: several API
processes and the Dagster forget run may share the folder (on one machine, or a file system
with working ``flock``). A line cut by a crash has no newline and is ignored.
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

    def append_forget(self, requested: str, ids: list[str], at_ms: int) -> None:
        """Record that ``ids`` (``requested``'s person) were forgotten at ``at_ms``; durable on return."""
        self._append(self.suppressions_file, {"requested": requested, "ids": ids, "at_ms": at_ms})

    def append_erasure(self, entry: dict[str, Any]) -> None:
        """Record what one store erased (see ``erasures``); durable on return."""
        self._append(self.erasures_file, entry)

    def forgets(self) -> list[dict[str, Any]]:
        """Every forget recorded, oldest first: {requested, ids, at_ms}."""
        return _read(self.suppressions_file)

    def suppressions(self) -> dict[str, int]:
        """Each forgotten id's latest forget time (epoch ms)."""
        return merge_suppressions(
            [(str(i), int(entry["at_ms"])) for entry in self.forgets() for i in entry.get("ids", ())]
        )

    def erasures(self) -> list[dict[str, Any]]:
        """Every erasure recorded, oldest first: {store, at_ms, ...} (store "redis" or "archive")."""
        return _read(self.erasures_file)

    def _append(self, path: Path, entry: dict[str, Any]) -> None:
        created = not path.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(entry, separators=(",", ":"), sort_keys=True) + "\n").encode()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
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
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    if lines[-1]:
        logger.warning("%s ends in a partial line (a crash mid-append); ignoring it", path)
    entries = []
    for number, line in enumerate(lines[:-1], 1):
        try:
            entry = json.loads(line)
        except ValueError:
            logger.warning("%s line %d is not JSON; ignoring it", path, number)
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries
