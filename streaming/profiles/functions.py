"""Loading the update.lua function library (update and backfill functions) into Redis."""

from __future__ import annotations

import hashlib
import re
from importlib import resources

import redis

from core.redis_client import RedisClient

#: A line of update.lua replaced by a file's text: its path from the repository root, in a package.
_INCLUDE = re.compile(r"^-- @include (\S+)\n", re.MULTILINE)


def _included(match: re.Match[str]) -> str:
    package, _, path = match.group(1).partition("/")
    return resources.files(package).joinpath(path).read_text()


def _compose(text: str) -> str:
    """The library as Redis loads it: one text, each ``-- @include <path>`` line replaced by its file."""
    return _INCLUDE.sub(_included, text)


#: update.lua with the rules prefilter (streaming/rules/prefilter.lua) in place of its include line.
_UPDATE_LIBRARY_TEXT = _compose(resources.files("streaming.profiles").joinpath("update.lua").read_text())
#: The update function, named after a digest of its library: an app only ever calls its own version.
UPDATE_FUNCTION = f"pulse_update_{hashlib.sha1(_UPDATE_LIBRARY_TEXT.encode()).hexdigest()[:12]}"
_UPDATE_LIBRARY = _UPDATE_LIBRARY_TEXT.replace(
    "#!lua name=pulse_update\n", f"#!lua name={UPDATE_FUNCTION}\n", 1
).replace("function_name = 'pulse_update'", f"function_name = '{UPDATE_FUNCTION}'", 1)
#: The library's other functions, renamed with it: trait backfills (streaming/traits/backfill.py),
#: mirroring one forget time into an id's suppression hash (streaming/profiles/suppression.py), and
#: identity links (the owner zset of an anonymous id, honouring unlinks and forgotten ids).
BACKFILL_FUNCTION, SUPPRESS_FUNCTION, LINK_FUNCTION = (
    UPDATE_FUNCTION.replace("pulse_update", f"pulse_{name}") for name in ("backfill", "suppress", "link")
)
for _name, _function in (
    ("pulse_backfill", BACKFILL_FUNCTION),
    ("pulse_suppress", SUPPRESS_FUNCTION),
    ("pulse_link", LINK_FUNCTION),
):
    _UPDATE_LIBRARY = _UPDATE_LIBRARY.replace(
        f"function_name = '{_name}'", f"function_name = '{_function}'", 1
    )

#: Deltas per script call: bounds how long one call blocks Redis (about 10 µs per delta).
SCRIPT_CHUNK = 500


class RedisTooOld(RuntimeError):
    """The server has no FUNCTION command (Redis 6 or older)."""


def mirror_missing(exc: redis.ResponseError) -> bool:
    """The update call refused to run: the forget mirror is gone from Redis (see update.lua, ARGV[12])."""
    return "PULSE_FORGET_MIRROR_MISSING" in str(exc)


def function_missing(exc: redis.ResponseError) -> bool:
    """The server does not have the update function (restarted without persistence, flushed)."""
    return "Function not found" in str(exc)


def load_library(client: RedisClient) -> None:
    """Load the update function library (on every master of a cluster); idempotent."""
    try:
        client.function_load(_UPDATE_LIBRARY, replace=True)
    except redis.ResponseError as exc:
        if "unknown command" in str(exc).lower():
            raise RedisTooOld(
                f"Pulse needs Redis or Valkey 7.0 or newer (profile updates are a Redis function): {exc}"
            ) from exc
        raise
