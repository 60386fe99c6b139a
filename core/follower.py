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

    def current(self) -> T:
        now = self._clock()
        if now - self._checked_at >= self._refresh_seconds:
            self._checked_at = now
            try:
                self._value = self.read(self._value)
            except self.keep_on as exc:
                logger.warning("%s: read failed, keeping what it has: %s", type(self).__name__, exc)
        return self._value
