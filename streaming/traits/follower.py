"""Reload the traits file when it changes, without a restart; a bad file never replaces a good one."""

from __future__ import annotations

import logging
from pathlib import Path

from core.follower import Follower
from core.settings import PulseSettings
from streaming.traits.loader import TraitFileError, load_traits
from streaming.traits.registry import TraitSet

logger = logging.getLogger(__name__)

DEFAULT_TRAITS_FILE = Path(__file__).resolve().parents[2] / "data" / "traits" / "traits.yaml"


class TraitsFollower(Follower[TraitSet]):
    """The current TraitSet of a traits file, checked for changes at most every ``refresh_seconds``.

    A missing file means no user traits (the built-in ones stay); ``prime`` raises on a bad
    file so an app never starts on a file it cannot read.
    """

    keep_on = (TraitFileError,)

    def __init__(
        self, path: Path | None, refresh_seconds: float = 2.0, interest_half_life_days: float = 7.0
    ) -> None:
        super().__init__(TraitSet(interest_half_life_days=interest_half_life_days), refresh_seconds)
        self.path = path or DEFAULT_TRAITS_FILE
        self.interest_half_life_days = interest_half_life_days
        self._stamp: tuple[int, int] | None = None
        self.load_errors = 0

    def read(self, traits: TraitSet) -> TraitSet:
        try:
            stat = self.path.stat()
        except OSError:
            if self._stamp is not None:
                logger.error("traits file %s is gone; keeping the %d traits loaded", self.path, len(traits))
                self._stamp = None
            return traits
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return traits
        self._stamp = stamp
        try:
            loaded = load_traits(self.path, self.interest_half_life_days)
        except TraitFileError:
            self.load_errors += 1
            raise
        logger.info("loaded %d traits from %s", len(loaded), self.path)
        return loaded


def traits_follower(settings: PulseSettings) -> TraitsFollower:
    """The follower of the configured traits file (``PULSE_TRAITS_FILE``)."""
    return TraitsFollower(
        settings.traits_file, settings.traits_refresh_seconds, settings.interest_half_life_days
    )


def load_configured_traits(settings: PulseSettings) -> TraitSet:
    """The configured traits now (batch jobs): raises TraitFileError on a bad file."""
    return traits_follower(settings).prime()
