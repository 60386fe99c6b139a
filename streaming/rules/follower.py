"""Reload the rule file when it changes, without a restart; a bad file never replaces a good one."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from streaming.rules.engine import RuleEngine
from streaming.rules.loader import RuleFileError, load_rules
from streaming.rules.model import EMPTY_RULESET

logger = logging.getLogger(__name__)

DEFAULT_RULES_FILE = Path(__file__).resolve().parents[2] / "data" / "rules" / "rules.yaml"


class RulesFollower:
    """The current RuleEngine for a rule file, checked for changes at most every ``refresh_seconds``."""

    def __init__(self, path: Path | None, refresh_seconds: float = 2.0) -> None:
        self.path = path or DEFAULT_RULES_FILE
        self._refresh = refresh_seconds
        self._checked_at = 0.0
        self._stamp: tuple[int, int] | None = None
        self._engine = RuleEngine(EMPTY_RULESET)
        self.load_errors = 0
        self.current()

    def current(self) -> RuleEngine:
        now = time.monotonic()
        if now - self._checked_at >= self._refresh:
            self._checked_at = now
            self._reload_if_changed()
        return self._engine

    def _reload_if_changed(self) -> None:
        try:
            stat = self.path.stat()
        except OSError:
            if self._stamp is not None:
                logger.error(
                    "rule file %s is gone; keeping the %d rules loaded", self.path, len(self._engine)
                )
                self._stamp = None
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            ruleset = load_rules(self.path)
        except RuleFileError as exc:
            self.load_errors += 1
            logger.error("rule file rejected, keeping the %d rules loaded before: %s", len(self._engine), exc)
            return
        self._engine = RuleEngine(ruleset)
        logger.info("loaded %d rules from %s (version %s)", len(ruleset), self.path, ruleset.version)
