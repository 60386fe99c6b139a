"""A trait's ``where``: the supported CEL subset, compiled to Python and to DuckDB SQL (pure).

The subset: paths into the event (``event.event_type``, ``event.event_id``, ``event.user_id``,
``event.anonymous_id``, ``event.timestamp``, ``event.category``, ``event.metadata.<key>...``,
also ``event.metadata["key"]``), compared with a literal (``== != < <= > >=``), the string
methods ``startsWith``/``endsWith``/``contains`` with a literal, ``has(event.metadata.<key>)``,
``&&``, ``||``, ``!``, parentheses and ``true``/``false``. Anything else is an error when the
file loads, never a guess.

Semantics are CEL's: a missing field is an error; ``&&``/``||`` absorb errors the way CEL
does (``false && error`` is false), which is SQL's three-valued logic with NULL as the error;
``==`` between different kinds is false, ordering them is an error. An event counts when its
``where`` is true (false and error both skip it). ``event.category`` is the resolved category
(metadata.category, else the catalog's for metadata.product_id).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from streaming.rules.cel_subset import Unsupported, parse

#: Event fields a path may start with; only ``metadata`` has fields below it.
ROOTS = ("event_id", "event_type", "user_id", "anonymous_id", "timestamp", "category", "metadata")
_ORDERING = ("<", "<=", ">", ">=")
_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}
_STRING_METHODS = {"startsWith": "prefix", "endsWith": "suffix", "contains": "contains"}
_NUMERIC_JSON = "('BIGINT', 'UBIGINT', 'DOUBLE', 'HUGEINT', 'UHUGEINT')"

MISSING = object()
Path = tuple[str, ...]
#: A compiled condition: ("and"|"or", a, b), ("not", a), ("const", bool), ("cmp", op, path, literal),
#: ("has", path), ("method", name, path, literal).
Condition = tuple


class WhereError(ValueError):
    """A ``where`` outside the supported subset."""


def compile_where(expression: str) -> Condition:
    """The condition tree of a ``where``; raises WhereError naming what is not supported."""
    try:
        tree = parse(expression)
    except Unsupported as exc:
        raise WhereError(f"not in the supported CEL subset: {exc}") from exc
    return _condition(tree)


def _condition(node: tuple) -> Condition:
    kind = node[0]
    if kind == "lit" and isinstance(node[1], bool):
        return ("const", node[1])
    if kind == "un" and node[1] == "!":
        return ("not", _condition(node[2]))
    if kind == "bin" and node[1] in ("&&", "||"):
        return ("and" if node[1] == "&&" else "or", _condition(node[2]), _condition(node[3]))
    if kind == "bin" and node[1] in _FLIP:
        op, left, right = node[1], node[2], node[3]
        if _literal(left) is not MISSING:
            op, left, right = _FLIP[op], right, left
        value = _literal(right)
        if value is MISSING:
            raise WhereError("a comparison needs an event field on one side and a literal on the other")
        if op in _ORDERING and isinstance(value, bool):
            raise WhereError("booleans cannot be ordered")
        return ("cmp", op, _path(left), value)
    if kind == "call" and node[1] == "has" and node[2] is None and len(node[3]) == 1:
        path = _path(node[3][0])
        if len(path) < 2 or path[0] != "metadata":
            raise WhereError("has() takes a field below event.metadata")
        return ("has", path)
    if kind == "call" and node[1] in _STRING_METHODS and node[2] is not None and len(node[3]) == 1:
        value = _literal(node[3][0])
        if not isinstance(value, str):
            raise WhereError(f"{node[1]}() takes a string literal")
        return ("method", node[1], _path(node[2]), value)
    raise WhereError(f"not in the supported CEL subset: {_describe(node)}")


def _literal(node: tuple) -> Any:
    if node[0] == "lit":
        return node[1]
    if node[0] == "un" and node[1] == "-" and node[2][0] == "lit":
        value = node[2][1]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value
    return MISSING


def _path(node: tuple) -> Path:
    names: list[str] = []
    while node[0] in ("sel", "idx"):
        if node[0] == "sel":
            names.append(node[2])
            node = node[1]
        else:
            key = node[2]
            if key[0] != "lit" or not isinstance(key[1], str):
                raise WhereError("an index into the event must be a string literal")
            names.append(key[1])
            node = node[1]
    if node != ("id", "event") or not names:
        raise WhereError(f"{_describe(node)} is not a field of `event`")
    path = tuple(reversed(names))
    check_path(path)
    return path


def check_path(path: Path) -> None:
    """Raise WhereError unless ``path`` names an event field (see ROOTS)."""
    if path[0] not in ROOTS:
        raise WhereError(f"event.{path[0]} is not an event field (one of {', '.join(ROOTS)})")
    if len(path) > 1 and path[0] != "metadata":
        raise WhereError(f"event.{path[0]} has no fields")
    for key in path:
        if '"' in key or "\\" in key or not key:
            raise WhereError(f"field name {key!r} is not supported")


def _describe(node: tuple) -> str:
    if node[0] == "call":
        return f"{node[1]}()"
    if node[0] == "bin":
        return f"operator {node[1]}"
    if node[0] == "id":
        return f"`{node[1]}`"
    if node[0] == "lit":
        return f"literal {node[1]!r}"
    return node[0]


# --- Python -------------------------------------------------------------------------------

#: What a path reads from: (event, resolved category) -> value, or MISSING.
Resolver = Callable[[Any, str], Any]


def resolver(path: Path) -> Resolver:
    """A function reading ``path`` from a validated event (MISSING when absent)."""
    root, rest = path[0], path[1:]
    if root == "category":
        return lambda _event, category: category or MISSING
    if root in ("user_id", "anonymous_id"):
        return lambda event, _category: getattr(event, root) or MISSING
    if root != "metadata":
        return lambda event, _category: getattr(event, root)
    if len(rest) == 1:  # the common shapes, without the loop: metadata.<key>, metadata.<key>.<key>
        key = rest[0]

        def read_one(event: Any, _category: str) -> Any:
            value = event.metadata
            return value.get(key, MISSING) if isinstance(value, dict) else MISSING

        return read_one
    if len(rest) == 2:
        outer, inner = rest

        def read_two(event: Any, _category: str) -> Any:
            value = event.metadata
            if not isinstance(value, dict):
                return MISSING
            value = value.get(outer, MISSING)
            return value.get(inner, MISSING) if isinstance(value, dict) else MISSING

        return read_two

    def read(event: Any, _category: str) -> Any:
        value: Any = event.metadata
        for key in rest:
            if not isinstance(value, dict) or key not in value:
                return MISSING
            value = value[key]
        return value

    return read


def json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    return "object"


#: A compiled Python condition: (event, category) -> True, False or None (a CEL error).
Predicate = Callable[[Any, str], bool | None]


def python_predicate(condition: Condition) -> Predicate:
    kind = condition[0]
    if kind == "const":
        value = condition[1]
        return lambda _e, _c: value
    if kind == "not":
        inner = python_predicate(condition[1])

        def negate(event: Any, category: str) -> bool | None:
            x = inner(event, category)
            return None if x is None else not x

        return negate
    if kind in ("and", "or"):
        a, b = python_predicate(condition[1]), python_predicate(condition[2])
        decides = kind == "or"  # the value that decides: true for ||, false for &&

        def both(event: Any, category: str) -> bool | None:
            x, y = a(event, category), b(event, category)
            if x is decides or y is decides:
                return decides
            if x is None or y is None:
                return None
            return not decides

        return both
    if kind == "has":
        parent, key = resolver(condition[1][:-1]), condition[1][-1]

        def has(event: Any, category: str) -> bool | None:
            value = parent(event, category)
            return key in value if isinstance(value, dict) else None

        return has
    if kind == "method":
        method = {"startsWith": str.startswith, "endsWith": str.endswith, "contains": str.__contains__}[
            condition[1]
        ]
        read, literal = resolver(condition[2]), condition[3]

        def call(event: Any, category: str) -> bool | None:
            value = read(event, category)
            return method(value, literal) if isinstance(value, str) else None

        return call
    op, read, literal = condition[1], resolver(condition[2]), condition[3]
    literal_kind = json_kind(literal)
    compare = _COMPARE[op]
    if literal_kind == "string" and op in ("==", "!="):  # a string against a string: no kind checks
        equal = op == "=="

        def cmp_string(event: Any, category: str) -> bool | None:
            value = read(event, category)
            if type(value) is str:
                return (value == literal) is equal
            return compared(value)

        def compared(value: Any) -> bool | None:
            if value is MISSING:
                return None
            value_kind = json_kind(value)
            if value_kind == "object":
                return None
            if value_kind != "string":
                return op == "!="
            return compare(value, literal)

        return cmp_string

    def cmp(event: Any, category: str) -> bool | None:
        value = read(event, category)
        if value is MISSING:
            return None
        value_kind = json_kind(value)
        if value_kind == "object":
            return None
        if value_kind != literal_kind:
            return None if op in _ORDERING else op == "!="
        if literal_kind == "number":
            return compare(float(value), float(literal))
        return compare(value, literal)

    return cmp


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda x, y: x == y,
    "!=": lambda x, y: x != y,
    "<": lambda x, y: x < y,
    "<=": lambda x, y: x <= y,
    ">": lambda x, y: x > y,
    ">=": lambda x, y: x >= y,
}


# --- DuckDB SQL -----------------------------------------------------------------------------


def sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def json_path(path: Path) -> str:
    return "$." + ".".join(f'"{key}"' for key in path)


class SqlPaths:
    """Event paths as SQL expressions of JSON type (NULL when absent) over ``profile_events``.

    Paths below ``metadata`` and ``timestamp`` become columns extracted from the event's JSON
    (``j``) when the table is built; ``extractions()`` lists them.
    """

    def __init__(self) -> None:
        self.columns: dict[Path, str] = {}

    def json(self, path: Path) -> str:
        root = path[0]
        if root in ("event_id", "event_type", "user_id", "anonymous_id"):
            return f"to_json({root})"
        if root == "category":
            return "to_json(nullif(event_category, ''))"
        if path == ("metadata",):
            return f"coalesce({self._column(path)}, '{{}}'::JSON)"
        return self._column(path)

    def _column(self, path: Path) -> str:
        alias = self.columns.get(path)
        if alias is None:
            alias = self.columns[path] = f"tp{len(self.columns)}"
        return alias

    def extractions(self) -> list[str]:
        return [
            f"json_extract(j, {sql_string(json_path(path))}) AS {alias}"
            for path, alias in self.columns.items()
        ]


def numeric_sql(x: str) -> str:
    """A JSON value as DOUBLE when it is a number, else NULL."""
    return f"CASE WHEN json_type({x}) IN {_NUMERIC_JSON} THEN ({x} ->> '$')::DOUBLE END"


def _literal_sql(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"{float(value)!r}::DOUBLE"
    return sql_string(value)


def _kind_test(x: str, value: Any) -> tuple[str, str]:
    """(SQL true when x has the literal's kind, x as that kind)."""
    if isinstance(value, bool):
        return f"json_type({x}) = 'BOOLEAN'", f"({x} ->> '$')::BOOLEAN"
    if isinstance(value, (int, float)):
        return f"json_type({x}) IN {_NUMERIC_JSON}", f"({x} ->> '$')::DOUBLE"
    return f"json_type({x}) = 'VARCHAR'", f"({x} ->> '$')"


def where_sql(condition: Condition, paths: SqlPaths) -> str:
    """The condition as a DuckDB boolean: true, false or NULL (a CEL error)."""
    kind = condition[0]
    if kind == "const":
        return "true" if condition[1] else "false"
    if kind == "not":
        return f"(NOT {where_sql(condition[1], paths)})"
    if kind in ("and", "or"):
        return f"({where_sql(condition[1], paths)} {kind.upper()} {where_sql(condition[2], paths)})"
    if kind == "has":
        parent, key = paths.json(condition[1][:-1]), condition[1][-1]
        child = sql_string(json_path((key,)))
        return (
            f"(CASE WHEN json_type({parent}) = 'OBJECT' THEN json_extract({parent}, {child}) IS NOT NULL END)"
        )
    if kind == "method":
        x = paths.json(condition[2])
        function = _STRING_METHODS[condition[1]]
        literal = sql_string(condition[3])
        return f"(CASE WHEN json_type({x}) = 'VARCHAR' THEN {function}({x} ->> '$', {literal}) END)"
    op, x, value = condition[1], paths.json(condition[2]), condition[3]
    same_kind, typed = _kind_test(x, value)
    other = "NULL" if op in _ORDERING else ("true" if op == "!=" else "false")
    return (
        f"(CASE WHEN {x} IS NULL OR json_type({x}) IN ('OBJECT', 'ARRAY') THEN NULL "
        f"WHEN {same_kind} THEN {typed} {op} {_literal_sql(value)} ELSE {other} END)"
    )
