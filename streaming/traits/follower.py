"""Reload the traits file when it changes, without a restart; a bad file never replaces a good one."""

from __future__ import annotations

from pathlib import Path

from core.follower import FileFollower
from core.settings import PulseSettings
from streaming.traits.loader import TraitFileError, load_traits
from streaming.traits.registry import TraitSet

DEFAULT_TRAITS_FILE = Path(__file__).resolve().parents[2] / "data" / "traits" / "traits.yaml"


class TraitsFollower(FileFollower[TraitSet]):
    """The current TraitSet of a traits file, checked for changes at most every ``refresh_seconds``.

    A missing file means no user traits (the built-in ones stay).
    """

    what = "traits file"
    keep_on = (TraitFileError,)

    def __init__(
        self, path: Path | None, refresh_seconds: float = 2.0, interest_half_life_days: float = 7.0
    ) -> None:
        initial = TraitSet(interest_half_life_days=interest_half_life_days)
        super().__init__(initial, path or DEFAULT_TRAITS_FILE, refresh_seconds)
        self.interest_half_life_days = interest_half_life_days

    def load(self, path: Path) -> TraitSet:
        return load_traits(path, self.interest_half_life_days)

    def describe(self, traits: TraitSet) -> str:
        return f"the {len(traits)} traits"


def traits_follower(settings: PulseSettings) -> TraitsFollower:
    """The follower of the configured traits file (``PULSE_TRAITS_FILE``)."""
    return TraitsFollower(
        settings.traits_file, settings.traits_refresh_seconds, settings.interest_half_life_days
    )


def load_configured_traits(settings: PulseSettings) -> TraitSet:
    """The configured traits now (batch jobs): raises TraitFileError on a bad file."""
    return traits_follower(settings).prime()
