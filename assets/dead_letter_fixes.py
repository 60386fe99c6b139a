"""Fixes for dead letters and their re-validation (pure, apart from loading a fix).

A fix is ``module:function`` (a Python function taking the rejected JSON value and returning the
fixed one, or None to leave the record alone) or a JSON-patch file (RFC 6902, ``*.json``).
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

from core.json_patch import JsonPatchError, apply_patch, check_patch
from quality.event_contract import EventContractError, check_event_size, decode_json, validate_event

Fix = Callable[[Any], Any]

_encode = msgspec.json.Encoder().encode
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_NUMBER = re.compile(r"(?<![+:\w])-?\d+(\.\d+)?(?![:\w])")  # a value, not part of "+00:00"


class FixSpecError(ValueError):
    """A --fix argument names no usable function or JSON-patch file."""


class Revalidated(NamedTuple):
    """A dead letter after the fix: the record to republish, or why not."""

    value: bytes | None = None
    key: bytes | None = None
    error: str | None = None
    declined: bool = False  # the fix returned None: it does not apply to this record
    event_time_ms: int = 0  # of the valid event (the forget rule reads it)


def reason_kind(error: str | None) -> str:
    """A reason without its values (quoted text, numbers, anything after ", got"), to group by."""
    text = (error or "unknown").split(", got ")[0]
    text = _NUMBER.sub("N", _QUOTED.sub("…", text))
    return text.split(": ")[0] if text.startswith("invalid JSON") else text


def load_fix(spec: str) -> Fix:
    """The fix a --fix argument names: ``path/to/patch.json`` or ``package.module:function``."""
    if spec.endswith(".json"):
        return _patch_fix(Path(spec))
    module_name, sep, function_name = spec.partition(":")
    if not sep or not module_name or not function_name:
        raise FixSpecError(f"{spec!r}: give a JSON-patch file (*.json) or module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise FixSpecError(
            f"cannot import {module_name!r} ({exc}); is it on PYTHONPATH (or in the current folder)?"
        ) from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise FixSpecError(f"{module_name} has no function {function_name!r}")
    return function


def _patch_fix(path: Path) -> Fix:
    try:
        patch = check_patch(json.loads(path.read_text()))
    except OSError as exc:
        raise FixSpecError(f"cannot read the JSON-patch file {path}: {exc.strerror}") from None
    except (json.JSONDecodeError, JsonPatchError) as exc:
        raise FixSpecError(f"{path} is not a JSON patch (RFC 6902): {exc}") from None
    return lambda value: apply_patch(value, patch)


def revalidate(raw: bytes, fix: Fix | None, received_at: str) -> Revalidated:
    """Decode ``raw``, apply ``fix``, and validate the result against the event contract.

    The republished event keeps a ``received_at`` it has, else gets ``received_at`` (when the
    dead letter first arrived), as the collector would have added it.
    """
    try:
        value = decode_json(raw)
    except EventContractError as exc:
        return Revalidated(error=str(exc))
    if fix is not None:
        try:
            value = fix(value)
        except JsonPatchError as exc:
            return Revalidated(error=f"the patch does not apply: {exc}")
        except Exception as exc:  # a user's fix may raise anything: report it per record
            return Revalidated(error=f"the fix raised {type(exc).__name__}: {exc}")
        if value is None:
            return Revalidated(declined=True)
    try:
        event = validate_event(value)
        encoded = _encode({"received_at": received_at, **value})
        check_event_size(len(encoded), value.get("received_at", received_at))
    except (EventContractError, TypeError) as exc:
        return Revalidated(error=str(exc))
    return Revalidated(value=encoded, key=event.profile_id.encode(), event_time_ms=event.timestamp_ms)
