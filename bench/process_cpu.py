"""CPU seconds of the platform's processes, totalled or sampled over time for a soak's windows."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable

import psutil


def tree_cpu(pid: int, reaped: bool = False, alone: bool = False) -> float:
    """User + system CPU seconds of a process and its live descendants (all threads).

    With ``reaped`` also the CPU of children that already exited and were waited for (Valkey's
    AOF-rewrite forks, for one), which the kernel adds to the parent once it reaps them. With
    ``alone`` the process without its descendants, live or reaped.
    """
    try:
        root = psutil.Process(pid)
        family = [root] if alone else [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for member in family:
        try:
            times = member.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
        if reaped and not alone and member is root:
            total += times.children_user + times.children_system
    return total


class PeriodicSampler:
    """Calls ``_sample()`` every ``every`` s on a daemon thread between ``start()`` and ``stop()``."""

    def __init__(self, every: float, name: str) -> None:
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._sample()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self._sample()

    def _sample(self) -> None:
        raise NotImplementedError


class CpuTimeline(PeriodicSampler):
    """Samples named processes' CPU every ``every`` s; CPU seconds per name and time bucket.

    ``processes`` is called at each sample and returns name -> pid, so processes restarted
    meanwhile (a broker maintenance restarts the broker and the consumers) are followed; a
    process's CPU between its last sample and its exit is not counted. Names in ``alone`` are
    counted without their descendants (a process that started the others).
    """

    def __init__(
        self, processes: Callable[[], dict[str, int]], every: float = 1.0, alone: frozenset[str] = frozenset()
    ) -> None:
        super().__init__(every, "cpu-timeline")
        self._processes = processes
        self._alone = alone
        self._last: dict[int, float] = {}
        self.samples: list[tuple[float, dict[str, float]]] = []  # (monotonic time, name -> CPU s since)
        self.rss: dict[str, float] = {}  # name -> resident MB at the last sample
        self.rss_samples: list[tuple[float, dict[str, float]]] = []

    def _sample(self) -> None:
        now, spent, rss = time.monotonic(), {}, {}
        for name, pid in self._processes().items():
            total = tree_cpu(pid, reaped=True, alone=name in self._alone)
            spent[name] = spent.get(name, 0.0) + max(0.0, total - self._last.get(pid, total))
            self._last[pid] = total
            try:
                rss[name] = psutil.Process(pid).memory_info().rss / 2**20
            except psutil.NoSuchProcess:
                pass
        self.samples.append((now, spent))
        self.rss_samples.append((now, rss))

    def per_window(self, start: float, window: float, windows: int) -> list[dict[str, float]]:
        """CPU seconds per name in each of ``windows`` windows of ``window`` s from ``start``."""
        buckets: list[dict[str, float]] = [defaultdict(float) for _ in range(windows)]
        for at, spent in self.samples:
            index = int((at - start) // window)
            if 0 <= index < windows:
                for name, seconds in spent.items():
                    buckets[index][name] += seconds
        return [dict(bucket) for bucket in buckets]

    def rss_per_window(self, start: float, window: float, windows: int) -> list[dict[str, float]]:
        """Resident MB per name at the last sample of each window."""
        out: list[dict[str, float]] = [{} for _ in range(windows)]
        for at, rss in self.rss_samples:
            index = int((at - start) // window)
            if 0 <= index < windows:
                out[index] = rss
        return out
