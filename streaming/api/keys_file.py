"""The keys file (PULSE_KEYS_FILE): hashed keys with scopes, reloaded when it changes, without a restart.

Format (YAML, or the same as JSON)::

    keys:
      - name: shop-web          # optional; shown in logs, never the key
        hash: sha256:<64 hex>   # `pulse keys hash` prints it
        scopes: [write]         # any of write, read, admin

A file that cannot be read or is invalid never replaces the keys loaded before it: the API keeps
them and logs an error. An empty file counts as invalid (an editor truncating it before writing
must not revoke every key); ``keys: []`` revokes every key of the file on purpose.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import Counter, Gauge

from core.follower import Follower, file_stamp
from core.settings import PulseSettings
from streaming.api.auth import (
    HASH_PREFIX,
    KeyConfigError,
    KeyEntry,
    KeyRing,
    MissingKeysError,
    Scope,
    digest_of_entry,
)

logger = logging.getLogger(__name__)

RELOAD_ERRORS = Counter(
    "pulse_api_keys_file_errors_total", "Keys file loads rejected (the previous keys stay)"
)
FILE_KEYS = Gauge("pulse_api_keys_file_keys", "Keys loaded from PULSE_KEYS_FILE")

_FIELDS = {"name", "hash", "scopes"}


class KeysFileError(ValueError):
    """The keys file cannot be used; the message says where and why (never a key)."""


def parse_keys_file(text: str, source: str = "keys file") -> tuple[KeyEntry, ...]:
    """The entries of a keys file's text; every problem raises KeysFileError."""
    if not text.strip():
        raise KeysFileError(f"{source} is empty (write `keys: []` to revoke every key of the file)")
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise KeysFileError(
            f"{source} is not valid YAML or JSON{where}: {getattr(exc, 'problem', None) or 'parse error'}"
        ) from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise KeysFileError(f'{source} must be an object with a "keys" list')
    if set(document) - {"keys"}:
        raise KeysFileError(f"{source}: unknown top-level field(s) {sorted(set(document) - {'keys'})}")
    return tuple(_entry(item, f"{source}, key {number}") for number, item in enumerate(document["keys"], 1))


def _entry(item: Any, where: str) -> KeyEntry:
    if not isinstance(item, dict):
        raise KeysFileError(f"{where}: must be an object with hash and scopes")
    if "key" in item:
        raise KeysFileError(
            f"{where}: store the key's hash, not the key (`pulse keys hash`), as hash: {HASH_PREFIX}<hex>"
        )
    unknown = set(item) - _FIELDS
    if unknown:
        raise KeysFileError(f"{where}: unknown field(s) {sorted(unknown)}; allowed: {sorted(_FIELDS)}")
    name = item.get("name", where)
    if not isinstance(name, str) or not name.strip():
        raise KeysFileError(f"{where}: name must be a non-empty string")
    label = f"{where} ({name})" if "name" in item else where
    hashed = item.get("hash")
    try:
        if not isinstance(hashed, str) or not hashed.startswith(HASH_PREFIX):
            raise KeyConfigError
        digest = digest_of_entry(hashed, label)
    except KeyConfigError:
        raise KeysFileError(f"{label}: hash must be {HASH_PREFIX}<64 hex digits>") from None
    scopes = item.get("scopes")
    if isinstance(scopes, str):
        scopes = [scopes]
    allowed = {scope.value for scope in Scope}
    if (
        not isinstance(scopes, list)
        or not scopes
        or not all(isinstance(s, str) and s in allowed for s in scopes)
    ):
        raise KeysFileError(f"{label}: scopes must be a non-empty list of {sorted(allowed)}")
    return KeyEntry(digest, frozenset(Scope(s) for s in scopes), name)


def load_keys_file(path: Path) -> tuple[KeyEntry, ...]:
    """Read and parse a keys file (KeysFileError when it is missing, unreadable or invalid)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeysFileError(
            f"cannot read keys file {path}: {exc.__class__.__name__}: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    return parse_keys_file(text, f"keys file {path}")


class KeysFollower(Follower[KeyRing]):
    """The current KeyRing: settings' keys plus the keys file, checked at most every ``refresh_seconds``."""

    def __init__(
        self,
        base: KeyRing,
        path: Path | None,
        refresh_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(base, refresh_seconds if path is not None else math.inf, clock)
        self.path = path
        self._base = base
        self._stamp: tuple[int, int, int] | None = None
        self.load_errors = 0
        if path is not None:
            entries = load_keys_file(path)  # at start-up a bad file is an error, not a warning
            self._stamp = file_stamp(self.path)  # type: ignore[arg-type]
            self._value = base.with_entries(entries)
            FILE_KEYS.set(len(entries))
            logger.info("loaded %s from %s", _describe(entries), path)
        self._checked_at = clock()

    @classmethod
    def from_settings(cls, settings: PulseSettings) -> KeysFollower:
        follower = cls(KeyRing.from_settings(settings), settings.keys_file, settings.keys_refresh_seconds)
        if not len(follower.current()) and not settings.dev_mode:
            raise MissingKeysError(
                f"No API keys: the keys file {settings.keys_file} holds none and PULSE_*_KEYS are unset."
            )
        return follower

    def scopes_of(self, key: str) -> set[Scope]:
        return self.current().scopes_of(key)

    def read(self, ring: KeyRing) -> KeyRing:
        stamp = file_stamp(self.path)  # type: ignore[arg-type]
        if stamp is None:
            if self._stamp is not None:
                self._fail(f"keys file {self.path} is gone", ring)
                self._stamp = None
            return ring
        if stamp == self._stamp:
            return ring
        self._stamp = stamp
        try:
            entries = load_keys_file(self.path)  # type: ignore[arg-type]
        except KeysFileError as exc:
            self._fail(str(exc), ring)
            return ring
        FILE_KEYS.set(len(entries))
        logger.info("reloaded %s from %s", _describe(entries), self.path)
        if not entries:
            logger.warning("keys file %s holds no keys: only PULSE_*_KEYS are accepted now", self.path)
        return self._base.with_entries(entries)

    def _fail(self, reason: str, ring: KeyRing) -> None:
        self.load_errors += 1
        RELOAD_ERRORS.inc()
        kept = len(ring) - len(self._base)
        logger.error("%s; keeping the %d key(s) loaded from it before", reason, kept)


def _describe(entries: tuple[KeyEntry, ...]) -> str:
    counts = {scope.value: sum(scope in e.scopes for e in entries) for scope in Scope}
    names = ", ".join(e.name for e in entries)
    return f"{len(entries)} key(s) ({', '.join(f'{n} {s}' for s, n in counts.items())}: {names or 'none'})"
