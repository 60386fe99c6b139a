"""An append-only disk spool of undelivered events: JSONL segments written then renamed.

A segment is written to ``.<name>.tmp``, fsynced and renamed to ``<name>.jsonl``, so a
``*.jsonl`` file is always complete. Segment names sort by creation time. One client owns a
spool directory at a time (an ``flock`` on ``spool.lock``).
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from pulse_sdk import codec
from pulse_sdk.errors import SpoolLocked

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

_SUFFIX = ".jsonl"
_TMP_SUFFIX = ".tmp"
_LOCK_NAME = "spool.lock"


class Spool:
    """Segments of encoded events in one directory, owned by this process while open."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd: int | None = self._lock()
        self._recover_temporary_files()

    def _lock(self) -> int | None:
        fd = os.open(self.directory / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is None:  # pragma: no cover
            return fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise SpoolLocked(
                f"spool directory {self.directory} is in use by another PulseClient (pid {holder}); "
                "give each client its own spool_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    def close(self) -> None:
        """Release the directory for the next client."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # also drops the flock
            self._lock_fd = None

    def segments(self) -> list[Path]:
        """Complete segments, oldest first."""
        return sorted(p for p in self.directory.glob(f"*{_SUFFIX}") if not p.name.startswith("."))

    def write(self, events: Sequence[bytes]) -> Path | None:
        """Durably write encoded events as one new segment; return its path (None if no events)."""
        if not events:
            return None
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        final = self.directory / f"{name}{_SUFFIX}"
        tmp = self.directory / f".{name}{_TMP_SUFFIX}"
        with open(tmp, "wb") as handle:
            for raw in events:
                handle.write(raw)
                handle.write(b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, final)
        self._sync_directory()
        return final

    def read(self, segment: Path) -> list[bytes]:
        """The encoded events of a segment; corrupt lines are logged and skipped."""
        return _complete_lines(segment.read_bytes(), segment)

    def remove(self, segment: Path) -> None:
        """Delete a segment whose events are all resolved."""
        segment.unlink(missing_ok=True)
        self._sync_directory()

    def _recover_temporary_files(self) -> None:
        # A .tmp left behind means a writer died before its rename: keep the lines that are whole.
        for tmp in sorted(self.directory.glob(f".*{_TMP_SUFFIX}")):
            events = _complete_lines(tmp.read_bytes(), tmp)
            if events:
                self.write(events)
                logger.warning(
                    "recovered %d events from the unfinished spool segment %s", len(events), tmp.name
                )
            tmp.unlink(missing_ok=True)

    def _sync_directory(self) -> None:
        try:
            fd = os.open(self.directory, os.O_RDONLY)
        except OSError:  # pragma: no cover - e.g. Windows
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _complete_lines(data: bytes, source: Path) -> list[bytes]:
    events = []
    lines = data.split(b"\n")
    if lines and lines[-1]:
        logger.warning("dropping a truncated last line of %s", source.name)
    for number, line in enumerate(lines[:-1], start=1):
        if not line.strip():
            continue
        try:
            whole = isinstance(codec.decode(line), dict)
        except (ValueError, RecursionError):
            whole = False
        if not whole:
            logger.warning("skipping corrupt line %d of %s", number, source.name)
            continue
        events.append(line)
    return events
