"""JSON Patch (RFC 6902): ``add``, ``remove``, ``replace``, ``move``, ``copy`` and ``test`` (pure).

Small on purpose: no JSON Patch library is a dependency, and fixing a dead letter needs only
these operations on plain JSON values. The input is never changed; a patched copy is returned.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

_OPERATIONS = {"add", "remove", "replace", "move", "copy", "test"}


class JsonPatchError(ValueError):
    """A patch is malformed or does not apply to the document (RFC 6902 error conditions)."""


def check_patch(patch: Any) -> list[dict[str, Any]]:
    """``patch`` as a list of operations, or JsonPatchError naming the first malformed one."""
    if not isinstance(patch, list):
        raise JsonPatchError("a JSON patch is an array of operations")
    for index, op in enumerate(patch):
        if not isinstance(op, dict) or op.get("op") not in _OPERATIONS:
            raise JsonPatchError(f"operation {index}: needs an 'op' of {', '.join(sorted(_OPERATIONS))}")
        if not isinstance(op.get("path"), str):
            raise JsonPatchError(f"operation {index} ({op['op']}): needs a string 'path'")
        if op["op"] in {"add", "replace", "test"} and "value" not in op:
            raise JsonPatchError(f"operation {index} ({op['op']}): needs a 'value'")
        if op["op"] in {"move", "copy"} and not isinstance(op.get("from"), str):
            raise JsonPatchError(f"operation {index} ({op['op']}): needs a string 'from'")
    return patch


def apply_patch(document: Any, patch: Sequence[dict[str, Any]]) -> Any:
    """A copy of ``document`` with every operation of ``patch`` applied in order, all or nothing."""
    result = copy.deepcopy(document)
    for index, op in enumerate(check_patch(list(patch))):
        try:
            result = _apply(result, op)
        except JsonPatchError as exc:
            raise JsonPatchError(f"operation {index} ({op['op']} {op['path']}): {exc}") from None
    return result


def _apply(doc: Any, op: dict[str, Any]) -> Any:
    kind, path = op["op"], op["path"]
    if kind == "add":
        return _add(doc, path, copy.deepcopy(op["value"]))
    if kind == "remove":
        return _remove(doc, path)[0]
    if kind == "replace":
        doc, _ = _remove(doc, path)
        return _add(doc, path, copy.deepcopy(op["value"]))
    if kind == "move":
        if path.startswith(op["from"] + "/"):
            raise JsonPatchError("cannot move a value into itself")
        doc, value = _remove(doc, op["from"])
        return _add(doc, path, value)
    if kind == "copy":
        return _add(doc, path, copy.deepcopy(_get(doc, op["from"])))
    if _get(doc, path) != op["value"]:
        raise JsonPatchError("test failed: the value differs")
    return doc


def _tokens(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise JsonPatchError(f"{pointer!r} is not a JSON pointer (it starts with '/')")
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


def _index(container: list[Any], token: str, *, for_add: bool = False) -> int:
    if for_add and token == "-":
        return len(container)
    if not token.isdigit() or (token != "0" and token.startswith("0")):
        raise JsonPatchError(f"{token!r} is not an array index")
    index = int(token)
    if index > len(container) or (index == len(container) and not for_add):
        raise JsonPatchError(f"array index {index} is out of range")
    return index


def _parent(doc: Any, pointer: str) -> tuple[Any, str]:
    tokens = _tokens(pointer)
    if not tokens:
        raise JsonPatchError("the whole document has no parent")
    return _get_tokens(doc, tokens[:-1]), tokens[-1]


def _get(doc: Any, pointer: str) -> Any:
    return _get_tokens(doc, _tokens(pointer))


def _get_tokens(doc: Any, tokens: list[str]) -> Any:
    for token in tokens:
        if isinstance(doc, dict):
            if token not in doc:
                raise JsonPatchError(f"no member {token!r}")
            doc = doc[token]
        elif isinstance(doc, list):
            doc = doc[_index(doc, token)]
        else:
            raise JsonPatchError(f"cannot step into a {type(doc).__name__} with {token!r}")
    return doc


def _add(doc: Any, pointer: str, value: Any) -> Any:
    if pointer == "":
        return value
    parent, token = _parent(doc, pointer)
    if isinstance(parent, dict):
        parent[token] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, token, for_add=True), value)
    else:
        raise JsonPatchError(f"cannot add to a {type(parent).__name__}")
    return doc


def _remove(doc: Any, pointer: str) -> tuple[Any, Any]:
    if pointer == "":
        return None, doc
    parent, token = _parent(doc, pointer)
    if isinstance(parent, dict):
        if token not in parent:
            raise JsonPatchError(f"no member {token!r} to remove")
        return doc, parent.pop(token)
    if isinstance(parent, list):
        return doc, parent.pop(_index(parent, token))
    raise JsonPatchError(f"cannot remove from a {type(parent).__name__}")
