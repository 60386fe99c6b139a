"""Load and validate a rule file (YAML): all of it or nothing, with every problem listed."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import yaml

from core.yaml12 import load_yaml
from quality.event_contract import CUSTOM_EVENT_TYPE_PATTERN
from streaming.rules.cel import CelProgramError, compile_expression, dry_run
from streaming.rules.model import ACTION_TYPES, Action, Rule, RuleSet

RULE_ID = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d)$")
_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_RULE_KEYS = {"id", "description", "on", "when", "per", "action", "cooldown", "max_fires", "ttl"}
_ACTION_KEYS = {"type", "message", "params", "url", "segment", "offer"}


class RuleFileError(ValueError):
    """The rule file is invalid; ``problems`` lists every problem found."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems))


def parse_duration_ms(value: Any) -> int:
    """'90s', '30m', '1h', '7d', '250ms' or a number of seconds -> milliseconds."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        return int(value * 1000)
    match = _DURATION.match(str(value).strip())
    if not match:
        raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 15m, 1h, 7d)")
    return int(match.group(1)) * _UNITS_MS[match.group(2)]


def load_rules(path: str | Path) -> RuleSet:
    """Read and validate a rule file; raises RuleFileError listing every problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise RuleFileError(str(path), [f"cannot read the file: {exc}"]) from exc
    return parse_rules(text, source=str(path))


def parse_rules(text: str, *, source: str = "<rules>") -> RuleSet:
    """Validate rule-file text (see docs/rules.md for the format)."""
    try:
        document = load_yaml(text)
    except yaml.YAMLError as exc:
        raise RuleFileError(source, [f"not valid YAML: {exc}"]) from exc
    if document is None:
        document = {"rules": []}
    if not isinstance(document, dict) or not isinstance(document.get("rules"), list):
        raise RuleFileError(source, ["the file must be a mapping with a `rules:` list"])
    problems: list[str] = []
    rules: list[Rule] = []
    seen: set[str] = set()
    for index, raw in enumerate(document["rules"]):
        where = f"rules[{index}]"
        if isinstance(raw, dict) and isinstance(raw.get("id"), str):
            where = f"rule {raw['id']!r}"
        rule = _parse_rule(raw, where, problems)
        if rule is None:
            continue
        if rule.id in seen:
            problems.append(f"{where}: duplicate id")
        seen.add(rule.id)
        rules.append(rule)
    if problems:
        raise RuleFileError(source, problems)
    version = hashlib.sha256(text.encode()).hexdigest()[:12]
    return RuleSet(tuple(rules), source=source, version=version)


def _parse_rule(raw: Any, where: str, problems: list[str]) -> Rule | None:
    if not isinstance(raw, dict):
        problems.append(f"{where}: a rule must be a mapping")
        return None
    before = len(problems)
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        problems.append(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_RULE_KEYS)}")
    rule_id = raw.get("id")
    if not isinstance(rule_id, str) or not RULE_ID.match(rule_id):
        problems.append(f"{where}: `id` must match {RULE_ID.pattern}")
    on = raw.get("on", [])
    if isinstance(on, str):
        on = [on]
    if not isinstance(on, list) or not all(
        isinstance(t, str) and re.match(CUSTOM_EVENT_TYPE_PATTERN, t) for t in on
    ):
        problems.append(f"{where}: `on` must be a list of event types")
        on = []
    when = raw.get("when")
    if not isinstance(when, str) or not when.strip():
        problems.append(f"{where}: `when` (a CEL condition) is required")
    per = raw.get("per", "")
    if not isinstance(per, str):
        problems.append(f"{where}: `per` must be a CEL expression string")
        per = ""
    timing: dict[str, int] = {}
    for key, default in (("cooldown", 0), ("ttl", 24 * 3600 * 1000)):
        try:
            timing[key] = parse_duration_ms(raw[key]) if key in raw else default
        except ValueError as exc:
            problems.append(f"{where}: `{key}`: {exc}")
    max_fires = raw.get("max_fires", 0)
    if not isinstance(max_fires, int) or isinstance(max_fires, bool) or max_fires < 0:
        problems.append(f"{where}: `max_fires` must be a non-negative integer (0 = no cap)")
        max_fires = 0
    action = _parse_action(raw.get("action"), where, problems)
    for label, expression in (
        ("when", when),
        ("per", per),
        *((f"action.params.{k}", v) for k, v in (action.params if action else {}).items()),
    ):
        if isinstance(expression, str) and expression.strip():
            try:
                dry_run(compile_expression(expression))
            except CelProgramError as exc:
                problems.append(f"{where}: `{label}`: {exc}")
    if len(problems) > before or action is None:
        return None
    return Rule(
        id=rule_id,
        when=when,
        action=action,
        on=frozenset(on),
        per=per,
        cooldown_ms=timing["cooldown"],
        max_fires=max_fires,
        ttl_ms=timing["ttl"],
        description=str(raw.get("description", "")),
    )


def _parse_action(raw: Any, where: str, problems: list[str]) -> Action | None:
    if not isinstance(raw, dict):
        problems.append(f"{where}: `action` must be a mapping with a `type` ({', '.join(ACTION_TYPES)})")
        return None
    unknown = set(raw) - _ACTION_KEYS
    if unknown:
        problems.append(f"{where}: unknown action key(s) {sorted(unknown)}")
    kind = raw.get("type")
    if kind not in ACTION_TYPES:
        problems.append(f"{where}: action `type` must be one of {', '.join(ACTION_TYPES)}, not {kind!r}")
        return None
    params = raw.get("params", {}) or {}
    if not isinstance(params, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in params.items()
    ):
        problems.append(f"{where}: `action.params` must map names to CEL expression strings")
        params = {}
    message = raw.get("message", "")
    if not isinstance(message, str):
        problems.append(f"{where}: `action.message` must be a string")
        message = ""
    missing = sorted(set(re.findall(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", message)) - set(params))
    if missing:
        problems.append(f"{where}: `action.message` uses {missing} but `action.params` does not define them")
    url, segment, offer = raw.get("url", ""), raw.get("segment", ""), raw.get("offer", {}) or {}
    if kind == "webhook" and not (isinstance(url, str) and url.startswith(("http://", "https://"))):
        problems.append(f"{where}: a webhook action needs an http(s) `url`")
    if kind == "segment" and not (isinstance(segment, str) and RULE_ID.match(segment)):
        problems.append(f"{where}: a segment action needs `segment` matching {RULE_ID.pattern}")
    if kind == "offer" and not isinstance(offer, dict):
        problems.append(f"{where}: `action.offer` must be a mapping (e.g. code, discount)")
        offer = {}
    return Action(
        type=kind, message=message, params=dict(params), url=str(url), segment=str(segment), offer=dict(offer)
    )
