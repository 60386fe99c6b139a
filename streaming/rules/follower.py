"""Reload the rule file when it changes, without a restart; a bad file never replaces a good one."""

from __future__ import annotations

from pathlib import Path

from core.follower import FileFollower
from streaming.rules.engine import RuleEngine
from streaming.rules.loader import RuleFileError, load_rules
from streaming.rules.model import EMPTY_RULESET

DEFAULT_RULES_FILE = Path(__file__).resolve().parents[2] / "data" / "rules" / "rules.yaml"


class RulesFollower(FileFollower[RuleEngine]):
    """The current RuleEngine for a rule file, checked for changes at most every ``refresh_seconds``."""

    what = "rule file"
    keep_on = (RuleFileError,)

    def __init__(self, path: Path | None, refresh_seconds: float = 2.0) -> None:
        super().__init__(RuleEngine(EMPTY_RULESET), path or DEFAULT_RULES_FILE, refresh_seconds)
        self.current()

    def load(self, path: Path) -> RuleEngine:
        return RuleEngine(load_rules(path))

    def describe(self, engine: RuleEngine) -> str:
        return f"the {len(engine)} rules (version {engine.ruleset.version})"
