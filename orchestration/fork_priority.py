"""The embedded Valkey's AOF rewrites yield the CPU to its main thread.

Valkey rewrites its append-only file in a forked child that writes the whole dataset: seconds of
a core once it holds millions of keys (mostly dedupe markers). Each process `pulse up` starts has
a session of its own, and with Linux's autogroup scheduling a session shares the CPU as one: the
child then takes half of Valkey's share from its main thread, which serves every profile update,
and end-to-end latency jumps for as long as the rewrite lasts. `pulse up` therefore gives every
child of the embedded Valkey the lowest priority (nice ``FORK_NICENESS``) as soon as it sees it
(``LocalPlatform.supervise_once``): the rewrite takes the CPU the main thread leaves.
Linux only (``/proc``); elsewhere nothing is changed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

#: Niceness given to Valkey's forked children (19: the lowest priority).
FORK_NICENESS = 19


class ForkPriority:
    """Lowers the priority of the children one process forks (from its main thread)."""

    def __init__(self, pid: int, niceness: int = FORK_NICENESS, proc: Path = Path("/proc")) -> None:
        self._children = proc / str(pid) / "task" / str(pid) / "children"
        self._niceness = niceness
        self._lowered: set[int] = set()

    def lower(self) -> list[int]:
        """Give the children not lowered yet the niceness; returns their pids."""
        try:
            children = {int(pid) for pid in self._children.read_text().split()}
        except (OSError, ValueError):
            return []  # not Linux, or the process is gone
        self._lowered &= children  # a pid that went may come back as another child
        lowered = []
        for pid in sorted(children - self._lowered):
            try:
                os.setpriority(os.PRIO_PROCESS, pid, self._niceness)
            except OSError:
                continue  # exited meanwhile
            self._lowered.add(pid)
            lowered.append(pid)
            logger.debug("valkey child %d at nice %d", pid, self._niceness)
        return lowered
