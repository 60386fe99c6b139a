"""The handshake between `pulse up` and the collectors while the embedded broker is maintained.

Files in one directory (``PULSE_BROKER_HOLD_DIR``, set by `pulse up` for its embedded broker):

- ``request``: a collector asks for maintenance (it has produced its share of record batches);
- ``prepare``: `pulse up` is about to hold intake; consumer apps checkpoint at once so they catch
  up while intake still flows (the hold then only waits for the last fraction of a second);
- ``hold``: `pulse up` asks every collector to stop producing; it holds a generation number;
- ``ack-<pid>``: a collector has stopped and every record it produced is acknowledged;
- ``restart``: everything is read; consumer apps close their Kafka clients before the broker goes;
- ``stopped-<pid>``: a consumer app has closed its clients and waits for the release;
- ``down``: the old broker is gone (written before the new one starts), with the monotonic time it
  went: a producer id assigned after it comes from the new broker (``streaming.next_producer``);
- ``restarted``: the new broker is up with its topics (offsets and commits not restored yet):
  consumer apps build their new application;
- ``ready-<pid>``: a collector's new producer holds a producer id of the new broker;
- removing ``hold`` (and the rest) lets the collectors produce and the consumer apps reconnect.

Plain files, because the collector and `pulse up` are separate processes on one machine and a
check costs one ``stat``. Nothing here touches Kafka.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

REQUEST = "request"
PREPARE = "prepare"
HOLD = "hold"
ACK_PREFIX = "ack-"
RESTART = "restart"
STOPPED_PREFIX = "stopped-"
DOWN = "down"
RESTARTED = "restarted"
READY_PREFIX = "ready-"


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

    def ready(self, generation: int, pid: int | None = None) -> None:
        """Say this collector's new producer, for the broker of ``generation``, holds its producer id."""
        _write_atomically(self.directory / f"{READY_PREFIX}{pid or os.getpid()}", str(generation))

    # Both: collectors and consumer apps -----------------------------------------------------
    def restarted_generation(self) -> int | None:
        """The generation whose new broker is up with its topics, or None."""
        try:
            return int((self.directory / RESTARTED).read_text() or "0")
        except (FileNotFoundError, ValueError):
            return None

    def down_since(self, generation: int) -> float | None:
        """When (``time.monotonic()``, one clock for every process of the machine) the old broker of
        ``generation`` went, or None before."""
        try:
            written, at = (self.directory / DOWN).read_text().split()
            return float(at) if int(written) == generation else None
        except (FileNotFoundError, ValueError):
            return None

    def coming_generation(self) -> int | None:
        """The generation of the maintenance being prepared or held, or None: producers for after it
        are made from then on (``streaming.next_producer``)."""
        coming = self.coming()
        return coming[0] if coming else None

    def coming(self) -> tuple[int, bool] | None:
        """The maintenance being prepared or held, as (generation, intake held), or None."""
        for name in (HOLD, PREPARE):
            try:
                return int((self.directory / name).read_text() or "0"), name == HOLD
            except (FileNotFoundError, ValueError):
                continue
        return None

    # Consumer-app side ------------------------------------------------------------------
    def preparing(self) -> bool:
        """True while `pulse up` prepares a maintenance or holds intake (checkpoint at once)."""
        return (self.directory / PREPARE).exists() or (self.directory / HOLD).exists()

    def restart_generation(self) -> int | None:
        """The generation whose broker restart is coming, or None."""
        try:
            return int((self.directory / RESTART).read_text() or "0")
        except (FileNotFoundError, ValueError):
            return None

    def stopped(self, generation: int, pid: int | None = None) -> None:
        """Say this consumer app has closed its Kafka clients for ``generation``."""
        _write_atomically(self.directory / f"{STOPPED_PREFIX}{pid or os.getpid()}", str(generation))

    # Supervisor side --------------------------------------------------------------------
    def requested(self) -> bool:
        """True when a collector asked for maintenance."""
        return (self.directory / REQUEST).exists()

    def begin_prepare(self, generation: int) -> None:
        """Ask the consumer apps to checkpoint at once: a hold is coming."""
        _write_atomically(self.directory / PREPARE, str(generation))

    def begin(self, generation: int) -> None:
        """Ask every collector to stop producing."""
        _write_atomically(self.directory / HOLD, str(generation))

    def begin_restart(self, generation: int) -> None:
        """Ask the consumer apps to close their Kafka clients: the broker is about to go."""
        _write_atomically(self.directory / RESTART, str(generation))

    def broker_down(self, generation: int, at: float | None = None) -> None:
        """Say the old broker is gone (call it before the new one starts)."""
        _write_atomically(self.directory / DOWN, f"{generation} {time.monotonic() if at is None else at}")

    def begin_restarted(self, generation: int) -> None:
        """Say the new broker is up with its topics: collectors and consumer apps get ready."""
        _write_atomically(self.directory / RESTARTED, str(generation))

    def acknowledgements(self, generation: int, prefix: str = ACK_PREFIX) -> int:
        """How many collectors (or, with ``STOPPED_PREFIX``, consumer apps; with ``READY_PREFIX``,
        collectors with a new producer) acknowledged ``generation``."""
        count = 0
        for ack in self.directory.glob(f"{prefix}*"):
            try:
                count += int(ack.read_text()) == generation
            except (FileNotFoundError, ValueError):
                continue
        return count

    def release(self) -> None:
        """Let the collectors produce again and forget the request."""
        files = (
            *self.directory.glob(f"{ACK_PREFIX}*"),
            *self.directory.glob(f"{STOPPED_PREFIX}*"),
            *self.directory.glob(f"{READY_PREFIX}*"),
        )
        done = (RESTART, DOWN, RESTARTED, REQUEST, HOLD, PREPARE)
        for path in (*files, *(self.directory / name for name in done)):
            path.unlink(missing_ok=True)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
