"""Reload the rule file when it changes, without a restart; a bad file never replaces a good one."""

from __future__ import annotations

import logging
from pathlib import Path

from core.follower import Follower
from streaming.rules.engine import RuleEngine
from streaming.rules.loader import RuleFileError, load_rules
from streaming.rules.model import EMPTY_RULESET

logger = logging.getLogger(__name__)

DEFAULT_RULES_FILE = Path(__file__).resolve().parents[2] / "data" / "rules" / "rules.yaml"


class RulesFollower(Follower[RuleEngine]):
    """The current RuleEngine for a rule file, checked for changes at most every ``refresh_seconds``."""

    def __init__(self, path: Path | None, refresh_seconds: float = 2.0) -> None:
        super().__init__(RuleEngine(EMPTY_RULESET), refresh_seconds)
        self.path = path or DEFAULT_RULES_FILE
        self._stamp: tuple[int, int] | None = None
        self.load_errors = 0
        self.current()

    def read(self, engine: RuleEngine) -> RuleEngine:
        try:
            stat = self.path.stat()
        except OSError:
            if self._stamp is not None:
                logger.error("rule file %s is gone; keeping the %d rules loaded", self.path, len(engine))
                self._stamp = None
            return engine
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return engine
        self._stamp = stamp
        try:
            ruleset = load_rules(self.path)
        except RuleFileError as exc:
            self.load_errors += 1
            logger.error("rule file rejected, keeping the %d rules loaded before: %s", len(engine), exc)
            return engine
        logger.info("loaded %d rules from %s (version %s)", len(ruleset), self.path, ruleset.version)
        return RuleEngine(ruleset)
