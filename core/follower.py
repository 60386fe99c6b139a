"""The one poll-and-swap follower: a value re-read from its source now and then, swapped whole.

Reference data, the intent model, the rule file and the API keys file all follow this shape:
``current()`` is called on the hot path, so between reads it costs a clock read and a
comparison; a read replaces the value in one assignment, so a reader sees the old value or the
new one, never a mixture; a failed read keeps the value it has.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Follower(Generic[T]):
    """Re-reads its value at most every ``refresh_seconds``; subclasses say how in ``read``."""

    #: Errors of a read that keep the current value (logged); any other error propagates.
    keep_on: ClassVar[tuple[type[BaseException], ...]] = ()

    def __init__(
        self, initial: T, refresh_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._value = initial
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._checked_at = float("-inf")

    def read(self, value: T) -> T:
        """The source's value now: ``value`` itself when it has not changed."""
        raise NotImplementedError

    def prime(self) -> T:
        """Read now, at start-up, letting every error through: an app must not start on nothing."""
        self._value = self.read(self._value)
        self._checked_at = self._clock()
        return self._value

    @property
    def value(self) -> T:
        """The value it has, without checking the source (for readers that must never block)."""
        return self._value

    def current(self) -> T:
        now = self._clock()
        if now - self._checked_at >= self._refresh_seconds:
            self._checked_at = now
            try:
                self._value = self.read(self._value)
            except self.keep_on as exc:
                logger.warning("%s: read failed, keeping what it has: %s", type(self).__name__, exc)
        return self._value


def file_stamp(path: Path) -> tuple[int, int, int] | None:
    """What tells a file changed (None: it is gone). The inode too: an atomic replace (rename, or a
    Kubernetes ConfigMap's symlink swap) may keep mtime and size."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


class FileFollower(Follower[T]):
    """A value loaded from a file, loaded again when the file changes (``file_stamp``).

    A file that is gone, or a change ``load`` rejects (one of ``keep_on``), keeps the value
    loaded before, logged as an error and counted in ``load_errors``; ``prime`` lets a
    rejection through instead, so an app never starts on a file it cannot read.
    """

    #: What the file is, for the log ("rule file").
    what: ClassVar[str] = "file"

    def __init__(self, initial: T, path: Path, refresh_seconds: float) -> None:
        super().__init__(initial, refresh_seconds)
        self.path = path
        self.load_errors = 0
        self._stamp: tuple[int, int, int] | None = None
        self._strict = False

    def load(self, path: Path) -> T:
        """The value the file holds; raises one of ``keep_on`` when it is invalid."""
        raise NotImplementedError

    def describe(self, value: T) -> str:
        """The value for the log ("the 3 rules")."""
        return "the value"

    def prime(self) -> T:
        self._strict = True
        try:
            return super().prime()
        finally:
            self._strict = False

    def read(self, value: T) -> T:
        stamp = file_stamp(self.path)
        if stamp is None:
            if self._stamp is not None:
                logger.error("%s %s is gone; keeping %s loaded", self.what, self.path, self.describe(value))
                self._stamp = None
            return value
        if stamp == self._stamp:
            return value
        self._stamp = stamp
        try:
            loaded = self.load(self.path)
        except self.keep_on as exc:
            self.load_errors += 1
            if self._strict:
                raise
            logger.error("%s rejected, keeping %s loaded before: %s", self.what, self.describe(value), exc)
            return value
        logger.info("loaded %s from %s", self.describe(loaded), self.path)
        return loaded
