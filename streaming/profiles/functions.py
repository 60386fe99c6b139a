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
#: Backfills of traits (streaming/traits/backfill.py), in the same library.
BACKFILL_FUNCTION = UPDATE_FUNCTION.replace("pulse_update", "pulse_backfill")
_UPDATE_LIBRARY = _UPDATE_LIBRARY.replace(
    "function_name = 'pulse_backfill'", f"function_name = '{BACKFILL_FUNCTION}'", 1
)
#: Mirrors one forget time into an id's suppression hash (streaming/profiles/suppression.py).
SUPPRESS_FUNCTION = UPDATE_FUNCTION.replace("pulse_update", "pulse_suppress")
_UPDATE_LIBRARY = _UPDATE_LIBRARY.replace(
    "function_name = 'pulse_suppress'", f"function_name = '{SUPPRESS_FUNCTION}'", 1
)
#: Records an identity link unless its anonymous id is forgotten (streaming/profiles/codec.py).
LINK_FUNCTION = UPDATE_FUNCTION.replace("pulse_update", "pulse_link")
_UPDATE_LIBRARY = _UPDATE_LIBRARY.replace(
    "function_name = 'pulse_link'", f"function_name = '{LINK_FUNCTION}'", 1
)

#: Identity links (the owner zset of an anonymous id, honouring unlinks), in the same library.
LINK_FUNCTION = UPDATE_FUNCTION.replace("pulse_update", "pulse_link")
_UPDATE_LIBRARY = _UPDATE_LIBRARY.replace(
    "function_name = 'pulse_link'", f"function_name = '{LINK_FUNCTION}'", 1
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
