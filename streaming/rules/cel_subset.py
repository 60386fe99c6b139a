"""A parser for the subset of CEL the rules prefilter models (pure; the `cel` bindings stay the authority).

Literals (int, double, quoted strings with only quote and backslash escapes, booleans),
identifiers, ``.field``, ``[index]``, calls, unary ``!``/``-``, the binary operators and the
ternary, with CEL's precedence. Anything else raises ``Unsupported``: the prefilter then
treats the expression as unknown and leaves it to CEL.
"""

from __future__ import annotations

import re
from typing import Any

INT64 = (-(2**63), 2**63 - 1)

_TOKEN = re.compile(
    r"""\s*(?:
    (?P<double>\d+\.\d+(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+)
    |(?P<int>\d+)(?![\w.])
    |(?P<string>"(?:[^"\\\n]|\\["'\\])*"|'(?:[^'\\\n]|\\["'\\])*')
    |(?P<name>[A-Za-z_][A-Za-z0-9_]*)
    |(?P<op>&&|\|\||==|!=|<=|>=|[<>!+\-*/%?:.\[\](),])
    )""",
    re.VERBOSE,
)
_RELATIONS = ("==", "!=", "<", "<=", ">", ">=", "in")


class Unsupported(ValueError):
    """Syntax the prefilter does not model (the CEL library still evaluates it)."""


def tokenize(expression: str) -> list[tuple[str, Any]]:
    tokens: list[tuple[str, Any]] = []
    position, end = 0, len(expression.rstrip())
    while position < end:
        match = _TOKEN.match(expression, position)
        if match is None or match.end() == position:
            raise Unsupported(f"unexpected text at {position}: {expression[position : position + 10]!r}")
        kind = match.lastgroup
        text = match.group(kind)
        if kind == "int":
            if int(text) > INT64[1]:
                raise Unsupported("int literal out of range")
            tokens.append(("lit", int(text)))
        elif kind == "double":
            tokens.append(("lit", float(text)))
        elif kind == "string":
            tokens.append(("lit", re.sub(r"\\(.)", r"\1", text[1:-1])))
        elif kind == "name":
            tokens.append(
                ("lit", {"true": True, "false": False}[text]) if text in ("true", "false") else ("name", text)
            )
        else:
            tokens.append(("op", text))
        position = match.end()
    return tokens


class _Parser:
    """Recursive descent over CEL's precedence: ?: < || < && < relations < + - < * / % < unary."""

    def __init__(self, tokens: list[tuple[str, Any]]) -> None:
        self.tokens = tokens
        self.i = 0

    def peek(self) -> tuple[str, Any] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, op: str | None = None) -> tuple[str, Any]:
        token = self.peek()
        if token is None or (op is not None and token != ("op", op)):
            raise Unsupported(f"expected {op or 'more'} at token {self.i}")
        self.i += 1
        return token

    def at(self, *ops: str) -> str | None:
        token = self.peek()
        if token is not None and (token[0] == "op" or token == ("name", "in")) and token[1] in ops:
            return token[1]
        return None

    def parse(self) -> tuple:
        node = self.ternary()
        if self.peek() is not None:
            raise Unsupported(f"unexpected token {self.peek()}")
        return node

    def ternary(self) -> tuple:
        condition = self.binary(0)
        if self.at("?"):
            self.take("?")
            then = self.ternary()
            self.take(":")
            return ("cond", condition, then, self.ternary())
        return condition

    _LEVELS: tuple[tuple[str, ...], ...] = (("||",), ("&&",), _RELATIONS, ("+", "-"), ("*", "/", "%"))

    def binary(self, level: int) -> tuple:
        if level == len(self._LEVELS):
            return self.unary()
        node = self.binary(level + 1)
        while (op := self.at(*self._LEVELS[level])) is not None:
            self.i += 1
            node = ("bin", op, node, self.binary(level + 1))
        return node

    def unary(self) -> tuple:
        if (op := self.at("!", "-")) is not None:
            self.i += 1
            return ("un", op, self.unary())
        return self.postfix(self.primary())

    def postfix(self, node: tuple) -> tuple:
        while True:
            if self.at("."):
                self.i += 1
                kind, name = self.take()
                if kind != "name":
                    raise Unsupported("a field name must follow '.'")
                if self.at("("):
                    node = ("call", name, node, self.arguments())
                else:
                    node = ("sel", node, name)
            elif self.at("["):
                self.i += 1
                key = self.ternary()
                self.take("]")
                node = ("idx", node, key)
            else:
                return node

    def arguments(self) -> list[tuple]:
        self.take("(")
        args = []
        while not self.at(")"):
            args.append(self.ternary())
            if not self.at(")"):
                self.take(",")
        self.take(")")
        return args

    def primary(self) -> tuple:
        kind, value = self.take()
        if kind == "lit":
            return ("lit", value)
        if kind == "name":
            if self.at("("):
                return ("call", value, None, self.arguments())
            return ("id", value)
        if value == "(":
            node = self.ternary()
            self.take(")")
            return node
        raise Unsupported(f"unsupported token {value!r}")


def parse(expression: str) -> tuple:
    """The syntax tree of a CEL expression in the modelled subset; raises Unsupported."""
    return _Parser(tokenize(expression)).parse()
