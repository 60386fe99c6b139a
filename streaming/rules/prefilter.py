"""Compile rules into the prefilter that ``update.lua`` runs on each triggering event (pure).

Most triggering events fire nothing: a threshold is not reached yet, or the rule is in its
cooldown or at its cap. Finding that out in Python costs a read of the person, a merged view, a
CEL context and every rule's condition, per event. The update script finds it out inside Redis,
right after the event's update (or, in a decide call, after the checkpoint's updates, for
events whose person changed later: ``UpdateOrder``), and names for each event only the rules
that *may* fire; the profile app evaluates just those with CEL, or, for a rule the script found
*certain* to fire, builds the decision from the event alone (``certain_fires``).

The prefilter must never drop a rule that can fire. It is three-valued: each node of a
condition is true, false or unknown (Kleene logic), and a rule is dropped only when its
condition is certainly false or its fire state certainly forbids it. Whatever the compiler
does not model exactly becomes unknown: arithmetic on profile values, ``event.metadata``,
ternaries, functions other than ``size()`` of a profile map, comparisons between values of
different kinds, integers beyond 2^53, and on a Redis Cluster a person stitched from several
profiles (its parts may live on other nodes). A CEL runtime error (a missing map key) is
unknown too. CEL compares ints with doubles numerically, and so does Lua.

Plan nodes (arrays, first element the opcode; see ``update.lua``; each rule's condition travels
as JSON text the script decodes and compiles only when an event first needs it):
``["k", value]`` constant, ``["e", field]`` event string field, ``["n", stored field, divisor]``
a profile number of the trait registry (summed over the person's parts, 0 when absent),
``["p", field]`` a number kept beside the registry (intent score, session count),
``["m", prefix, key, positive only]`` profile map entry (missing: unknown), ``["in", prefix,
key, positive only]``, ``["size", prefix, positive only]`` entries of a profile map,
``["and", a, b]``, ``["or", a, b]``, ``["not", a]``, ``["cmp", op, a, b]``, ``["?"]`` unknown.
Per event type the plans are indexed (``_type_plan``) by event-field guards and by threshold
tiers, so most rules that cannot fire are not evaluated.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgspec

from streaming.rules.cel_subset import INT64, Unsupported, parse
from streaming.rules.model import Rule, referenced_fields
from streaming.traits.measures import MICROS
from streaming.traits.registry import BUILTIN_TRAITS

logger = logging.getLogger(__name__)

#: Event fields the script has in the delta, exactly as ``event_view`` shows them.
EVENT_STRING_FIELDS = ("event_id", "event_type", "category")


def _registry_fields() -> tuple[dict[str, tuple[str, int, str]], dict[str, tuple[str, bool]]]:
    """The built-in traits the script can read (streaming/traits/definition.py): numbers as
    (stored field, divisor, kind) and maps as (field prefix, positive only), by profile field."""
    numbers: dict[str, tuple[str, int, str]] = {}
    maps: dict[str, tuple[str, bool]] = {}
    for read in BUILTIN_TRAITS.reads:
        trait = read.trait
        if trait.stored_as is None or trait.kind not in ("count", "sum") or read.window_days:
            continue
        if trait.keyed_by is None:
            micros = trait.kind == "sum"
            numbers[read.profile_field] = (
                trait.stored_as,
                MICROS if micros else 1,
                "double" if micros else "int",
            )
        elif trait.kind == "count":
            maps[read.profile_field] = (trait.stored_as.rstrip(":"), read.positive_only)
    return numbers, maps


#: Profile numbers of the trait registry: (stored field, divisor, kind).
REGISTRY_NUMBERS, PROFILE_MAPS = _registry_fields()
#: Every profile number a rule may compare, and its kind; the last two sit beside the registry.
PROFILE_NUMBERS = {
    **{name: kind for name, (_, _, kind) in REGISTRY_NUMBERS.items()},
    "intent_score": "double",
    "session_count": "int",
}
UNKNOWN: list[Any] = ["?"]
_NUMBER = ("int", "double")


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "double"
    return "string"


def _fold(op: str, a: Any, b: Any) -> Any:
    """Constant arithmetic with CEL's rules for two literals of one kind, else Unsupported."""
    if _kind(a) != _kind(b) or _kind(a) not in _NUMBER:
        raise Unsupported("arithmetic on mixed or non-number constants")
    if isinstance(a, float):
        if op == "%" or (op == "/" and b == 0):
            raise Unsupported("double modulo or division by zero")
        return {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else 0.0}[op]
    if op in ("/", "%") and b == 0:
        raise Unsupported("division by zero")
    quotient = abs(a) // abs(b) * (1 if (a >= 0) == (b >= 0) else -1) if b else 0
    result = {"+": a + b, "-": a - b, "*": a * b, "/": quotient, "%": a - b * quotient}[op]
    if not INT64[0] <= result <= INT64[1]:
        raise Unsupported("int overflow")
    return result


def compile_node(node: tuple) -> tuple[list[Any], str]:
    """(plan node, its kind: int, double, string, bool or ?) of a syntax tree node."""
    kind = node[0]
    if kind == "lit":
        if _kind(node[1]) == "int" and abs(node[1]) > 2**53:
            return UNKNOWN, "?"  # Lua numbers are doubles: beyond 2^53 they are not exact
        if _kind(node[1]) == "double" and not math.isfinite(node[1]):
            return UNKNOWN, "?"  # plan nodes travel as JSON, which has no infinities
        return ["k", node[1]], _kind(node[1])
    if kind == "sel" and node[1][0] == "id":
        root, name = node[1][1], node[2]
        if root == "event" and name in EVENT_STRING_FIELDS:
            return ["e", name], "string"
        if root == "profile" and name in REGISTRY_NUMBERS:
            stored, divisor, number_kind = REGISTRY_NUMBERS[name]
            return ["n", stored, divisor], number_kind
        if root == "profile" and name in PROFILE_NUMBERS:
            return ["p", name], PROFILE_NUMBERS[name]
        return UNKNOWN, "?"
    if kind == "idx":
        found = _profile_map(node[1])
        key, key_kind = compile_node(node[2])
        if found is not None and key_kind == "string":
            return ["m", found[0], key, found[1]], "int"
        return UNKNOWN, "?"
    if kind == "un":
        operand, operand_kind = compile_node(node[2])
        if node[1] == "!":
            return (["not", operand], "bool") if operand_kind in ("bool", "?") else (UNKNOWN, "?")
        if operand[0] == "k" and operand_kind in _NUMBER:
            return compile_node(("lit", -operand[1]))
        return UNKNOWN, "?"
    if kind == "bin":
        return _binary(node[1], node[2], node[3])
    if kind == "call" and node[1] == "size":
        target = node[2] if node[2] is not None else (node[3][0] if len(node[3]) == 1 else None)
        arguments = node[3] if node[2] is not None else node[3][1:]
        found = _profile_map(target) if target is not None and not arguments else None
        if found is not None:
            return ["size", *found], "int"
    return UNKNOWN, "?"


def _profile_map(node: tuple) -> tuple[str, bool] | None:
    if node[0] == "sel" and node[1] == ("id", "profile"):
        return PROFILE_MAPS.get(node[2])
    return None


def _binary(op: str, left: tuple, right: tuple) -> tuple[list[Any], str]:
    if op in ("&&", "||"):
        a, a_kind = compile_node(left)
        b, b_kind = compile_node(right)
        if {a_kind, b_kind} <= {"bool", "?"}:
            return ["and" if op == "&&" else "or", a, b], "bool"
        return UNKNOWN, "?"
    if op == "in":
        found = _profile_map(right)
        key, key_kind = compile_node(left)
        if found is not None and key_kind == "string":
            return ["in", found[0], key, found[1]], "bool"
        return UNKNOWN, "?"
    a, a_kind = compile_node(left)
    b, b_kind = compile_node(right)
    if op in ("+", "-", "*", "/", "%"):
        if a[0] == "k" and b[0] == "k":
            try:
                return compile_node(("lit", _fold(op, a[1], b[1])))
            except Unsupported:
                return UNKNOWN, "?"
        return UNKNOWN, "?"
    numbers = a_kind in _NUMBER and b_kind in _NUMBER
    same = a_kind == b_kind and a_kind in ("string", "bool")
    if numbers or (same and op in ("==", "!=")):
        return ["cmp", op, a, b], "bool"
    return UNKNOWN, "?"


def compile_condition(expression: str) -> list[Any]:
    """The plan of a rule's ``when``: unknown when it is not a boolean in the subset."""
    try:
        plan, kind = compile_node(parse(expression))
    except (Unsupported, KeyError, IndexError, RecursionError) as exc:
        logger.debug("condition %r is not prefiltered: %s", expression, exc)
        return UNKNOWN
    return plan if kind == "bool" else UNKNOWN


def state_key_plan(rule: Rule) -> list[Any]:
    """How the script finds a rule's fire state: [0] the rule id, [1, field] per event field, [2] unknown."""
    if not rule.per:
        return [0]
    try:
        node = parse(rule.per)
    except Unsupported:
        return [2]
    if node[0] == "sel" and node[1] == ("id", "event") and node[2] in EVENT_STRING_FIELDS:
        return [1, node[2]]
    return [2]


def certain_fires(rule: Rule) -> bool:
    """Whether the script may decide this rule fires, leaving Python only to build the decision.

    Its fire state must be found by the script (no ``per`` or ``per`` an event field), its
    params must not read the profile, and it must not be a segment (that reads the profile's
    segments). Its condition must still come out exactly true for the event.
    """
    used = referenced_fields(list(rule.action.params.values()))
    return state_key_plan(rule)[0] != 2 and used["profile"] == set() and rule.action.type != "segment"


def rule_plan(number: int, rule: Rule) -> list[Any]:
    """[rule number, rule id, condition plan, state key plan, max_fires, cooldown ms, certain fires
    allowed]."""
    return [
        number,
        rule.id,
        compile_condition(rule.when),
        state_key_plan(rule),
        rule.max_fires,
        rule.cooldown_ms,
        certain_fires(rule),
    ]


def guard(condition: list[Any]) -> tuple[str, str] | None:
    """(event field, value) when the condition requires ``event.<field> == "<value>"`` at its top."""
    if condition[0] == "and":
        return guard(condition[1]) or guard(condition[2])
    if condition[0] == "cmp" and condition[1] == "==":
        a, b = condition[2], condition[3]
        for one, other in ((a, b), (b, a)):
            if one[0] == "e" and other[0] == "k" and isinstance(other[1], str):
                return one[1], other[1]
    return None


#: The stored fields behind the numbers kept beside the registry.
_NUMBER_FIELDS = {"intent_score": ["intent_score"], "session_count": ["ss"]}


def read_fields(node: list[Any], fields: set[str], keyed: set[tuple[str, str]]) -> None:
    """Collect the stored fields a plan node reads: fixed names, and (prefix, event field) pairs."""
    if node[0] == "n":
        fields.add(node[1])
    elif node[0] == "p":
        fields.update(_NUMBER_FIELDS[node[1]])
    elif node[0] in ("m", "in"):
        key = node[2]
        if key[0] == "k":
            fields.add(f"{node[1]}:{key[1]}")
        elif key[0] == "e":
            keyed.add((node[1], key[1]))
    for child in node[1:]:
        if isinstance(child, list):
            read_fields(child, fields, keyed)


def threshold(condition: list[Any]) -> tuple[list[Any], float, bool] | None:
    """(profile number node, c, strict) when the condition requires ``node >= c`` (or ``> c``) at its top."""
    if condition[0] == "and":
        return threshold(condition[1]) or threshold(condition[2])
    if condition[0] != "cmp":
        return None
    op, a, b = condition[1], condition[2], condition[3]
    if op in ("<", "<="):  # c < node is node > c
        op, a, b = {"<": ">", "<=": ">="}[op], b, a
    numeric = b[0] == "k" and not isinstance(b[1], bool) and isinstance(b[1], int | float)
    if op in (">", ">=") and numeric and a[0] in ("n", "p", "size", "m") and (a[0] != "m" or a[2][0] == "k"):
        return a, b[1], op == ">"
    return None


def _reads(plans: Iterable[list[Any]]) -> dict[str, list[Any]]:
    """{"fields": stored fields these plans read, "keyed": [prefix, event field] of those keyed by the
    event}."""
    fields: set[str] = set()
    keyed: set[tuple[str, str]] = set()
    for plan in plans:
        read_fields(plan[2], fields, keyed)
    return {"fields": sorted(fields), "keyed": [list(pair) for pair in sorted(keyed)]}


def _type_plan(plans: list[list[Any]]) -> bytes:
    """The plans of one event type, indexed so most rules that cannot fire are not evaluated.

    {"all": plans evaluated for every event, "by": {event field: {value: {"rules": plans
    guarded by ``event.<field> == value``, "fields", "keyed": what they read}}}, "tiers":
    [[profile number node, [[c, strict, plan], ...]]]: plans requiring ``node >= c`` (or
    ``> c``), in ascending c, so one read of the number skips the tiers above it; "fields":
    stored fields the plans of "all" and "tiers" read, "keyed": [prefix, event field] of the
    fields keyed by the event}. The script reads an event's fields with its update: those of
    its type and of the one guarded group its event matches.
    """
    unguarded: list[list[Any]] = []
    by: dict[str, dict[str, list[list[Any]]]] = {}
    tiers: dict[bytes, tuple[list[Any], list[tuple[float, bool, list[Any]]]]] = {}
    for plan in plans:
        found = guard(plan[2])
        if found is not None:
            by.setdefault(found[0], {}).setdefault(found[1], []).append(plan)
            continue
        tier = threshold(plan[2])
        if tier is None:
            unguarded.append(plan)
        else:
            node, bound, strict = tier
            tiers.setdefault(msgspec.msgpack.encode(node), (node, []))[1].append((bound, strict, plan))
    tier_list = [
        [
            _packed(node),
            [
                [bound, strict, _lazy(plan)]
                for bound, strict, plan in sorted(entries, key=lambda e: (e[0], e[1]))
            ],
        ]
        for node, entries in tiers.values()
    ]
    lazy_by = {
        name: {
            value: {"rules": [_lazy(plan) for plan in group], **_reads(group)}
            for value, group in values.items()
        }
        for name, values in by.items()
    }
    tiered = [plan for _, entries in tiers.values() for _, _, plan in entries]
    return msgspec.msgpack.encode(
        {
            "all": [_lazy(plan) for plan in unguarded],
            "by": lazy_by,
            "tiers": tier_list,
            **_reads(unguarded + tiered),
        }
    )


def _packed(node: list[Any]) -> str:
    """A plan node as JSON text: the script decodes and compiles it only when it first needs it.

    (Redis's cmsgpack has no binary type, so nested msgpack cannot travel; literals are finite.)
    """
    return msgspec.json.encode(node).decode()


def _lazy(plan: list[Any]) -> list[Any]:
    """A rule plan with its condition packed (see ``_packed``)."""
    return [plan[0], plan[1], _packed(plan[2]), *plan[3:]]


class Prefilter:
    """A rule set's plans per event type; ``argument`` is what one script call carries."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        types: dict[str, list[list[Any]]] = {}
        any_type: list[list[Any]] = []
        for number, rule in enumerate(rules):
            plan = rule_plan(number, rule)
            if not rule.on:
                any_type.append(plan)
            for event_type in sorted(rule.on):
                types.setdefault(event_type, []).append(plan)
        any_plan = msgspec.Raw(_type_plan(any_type))
        type_plans = {event_type: msgspec.Raw(_type_plan(plans)) for event_type, plans in types.items()}
        self._argument = msgspec.msgpack.encode({"types": type_plans, "any": any_plan})

    def argument(self) -> bytes:
        """{"types": {event type: type plan}, "any": type plan of rules with no ``on``}.

        Every script call carries the same bytes; the update function decodes them once per
        server and keeps them (update.lua, ``plans``).
        """
        return self._argument


class Candidate(NamedTuple):
    """What the script found for one event: the rules that may fire on it, and its person."""

    person: str  # "" when the script did not read the person
    user_id: str | None
    rules: dict[int, tuple[bool, int]]  # rule number -> (certain to fire, the person's fire count so far)

    def uncertain(self) -> set[int]:
        return {number for number, (certain, _) in self.rules.items() if not certain}


@dataclass
class Prefiltered:
    """What the update script's prefilter found in one checkpoint.

    ``candidates`` were found right after each event's update; ``stitched`` names, for an
    event whose person was other than its own profile then, the parts (event_id -> profile ids);
    ``decided`` were found by decide calls, on the people as the checkpoint left them, for
    events whose person changed after their update.
    """

    candidates: dict[str, Candidate] = field(default_factory=dict)
    stitched: dict[str, list[str]] = field(default_factory=dict)
    decided: dict[str, Candidate] = field(default_factory=dict)

    def add(self, candidates: Iterable[list[Any]], stitched: Iterable[list[Any]], *, decided: bool) -> None:
        """Decode one script reply's candidates and stitched people."""
        add_candidates(self.decided if decided else self.candidates, candidates)
        if not decided:
            for event_id, parts in stitched:
                self.stitched[_text(event_id)] = [_text(part) for part in parts]

    def final(self, redecided: Collection[str]) -> dict[str, Candidate]:
        """Candidates per event: the decide calls' for the ``redecided`` events, else the updates'."""
        found = {event_id: c for event_id, c in self.candidates.items() if event_id not in redecided}
        found.update(self.decided)
        return found


def add_candidates(found: dict[str, Candidate], entries: Iterable[list[Any]]) -> None:
    """Decode the script's candidates ({event_id, {rule, certain, count, ...}, person, user_id})."""
    for event_id, flat, person, user_id in entries:
        event_id, person, user_id = (_text(value) for value in (event_id, person, user_id))
        rules = {flat[i]: (flat[i + 1] == 1, flat[i + 2]) for i in range(0, len(flat), 3)}
        current = found.get(event_id)
        if current is not None:  # the same event twice in a checkpoint: the uncertain answer wins
            for number, (certain, count) in current.rules.items():
                rules[number] = (certain and rules.get(number, (True, 0))[0], count)
        found[event_id] = Candidate(person, user_id or None, rules)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
