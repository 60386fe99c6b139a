"""The handshake between `pulse up` and the collectors while the embedded broker is maintained.

Files in one directory (``PULSE_BROKER_HOLD_DIR``, set by `pulse up` for its embedded broker):

- ``request``: a collector asks for maintenance (it has produced its share of record batches);
- ``hold``: `pulse up` asks every collector to stop producing; it holds a generation number;
- ``ack-<pid>``: a collector has stopped and every record it produced is acknowledged;
- removing ``hold`` (and the acks and the request) lets the collectors produce again.

Plain files, because the collector and `pulse up` are separate processes on one machine and a
check costs one ``stat``. Nothing here touches Kafka.
"""

from __future__ import annotations

import os
from pathlib import Path

REQUEST = "request"
HOLD = "hold"
ACK_PREFIX = "ack-"


class BrokerHold:
    """One hold directory, seen from either side."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def prepare(self) -> None:
        """Create the directory and clear what an earlier run left (no hold, no request)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.release()

    # Collector side ---------------------------------------------------------------------
    def request(self) -> None:
        """Ask for maintenance (idempotent)."""
        _write_atomically(self.directory / REQUEST, str(os.getpid()))

    def held_generation(self) -> int | None:
        """The generation of the hold in force, or None when producing is allowed."""
        try:
            return int((self.directory / HOLD).read_text() or "0")
        except (FileNotFoundError, ValueError):
            return None

    def acknowledge(self, generation: int, pid: int | None = None) -> None:
        """Say this process has stopped producing for ``generation`` and holds nothing unacknowledged."""
        _write_atomically(self.directory / f"{ACK_PREFIX}{pid or os.getpid()}", str(generation))

    # Supervisor side --------------------------------------------------------------------
    def requested(self) -> bool:
        """True when a collector asked for maintenance."""
        return (self.directory / REQUEST).exists()

    def begin(self, generation: int) -> None:
        """Ask every collector to stop producing."""
        _write_atomically(self.directory / HOLD, str(generation))

    def acknowledgements(self, generation: int) -> int:
        """How many collectors acknowledged ``generation``."""
        count = 0
        for ack in self.directory.glob(f"{ACK_PREFIX}*"):
            try:
                count += int(ack.read_text()) == generation
            except (FileNotFoundError, ValueError):
                continue
        return count

    def release(self) -> None:
        """Let the collectors produce again and forget the request."""
        for path in (*self.directory.glob(f"{ACK_PREFIX}*"), self.directory / REQUEST, self.directory / HOLD):
            path.unlink(missing_ok=True)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
