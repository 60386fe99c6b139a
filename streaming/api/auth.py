"""API keys: write keys send events; read keys read and forget profiles; admin keys do what read keys do.

A key is only ever compared by its SHA-256 digest, in constant time against every configured
digest, so a configuration may hold ``sha256:<hex>`` entries instead of the keys themselves.
SHA-256 rather than a slow password hash: keys are long random strings, not guessable
passwords, and a slow hash would cost every request (docs/security.md).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from core.settings import DEV_READ_KEY, DEV_WRITE_KEY, PulseSettings

HASH_PREFIX = "sha256:"
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")


class Scope(str, Enum):
    WRITE = "write"
    READ = "read"
    ADMIN = "admin"


#: The scopes that satisfy a required one: an admin key may do whatever a read key may.
SATISFIED_BY: dict[Scope, frozenset[Scope]] = {
    Scope.WRITE: frozenset({Scope.WRITE}),
    Scope.READ: frozenset({Scope.READ, Scope.ADMIN}),
    Scope.ADMIN: frozenset({Scope.ADMIN}),
}


class MissingKeysError(RuntimeError):
    """Start-up error: no keys are configured outside local dev."""


class KeyConfigError(ValueError):
    """A configured key entry is malformed; the message names the entry, never its value."""


def hash_key(key: str) -> str:
    """The ``sha256:<hex>`` form of a key, for PULSE_*_KEYS entries and keys files."""
    return HASH_PREFIX + _digest(key).hex()


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def digest_of_entry(entry: str, where: str) -> bytes:
    """The digest a configured entry stands for: a ``sha256:<hex>`` hash, or a plain key."""
    if entry.startswith(HASH_PREFIX):
        hexdigest = entry[len(HASH_PREFIX) :]
        if not _HEX_DIGEST.fullmatch(hexdigest):
            raise KeyConfigError(f"{where} starts with {HASH_PREFIX} but is not {HASH_PREFIX}<64 hex digits>")
        return bytes.fromhex(hexdigest)
    return _digest(entry)


@dataclass(frozen=True)
class KeyEntry:
    """One configured key: its digest, its scopes, and a name for messages (never the key)."""

    digest: bytes
    scopes: frozenset[Scope]
    name: str


def grants(scopes: Iterable[Scope], needed: Scope) -> bool:
    """Whether a key with ``scopes`` may do what needs ``needed``."""
    return not SATISFIED_BY[needed].isdisjoint(scopes)


def denial(needed: Scope) -> str:
    """The 403 message for a key that lacks ``needed``."""
    if needed is Scope.ADMIN:
        return "this key may not forget users: use an admin key (PULSE_FORGET_REQUIRES_ADMIN is on)"
    return f"this key may not {needed.value}: use a {needed.value} key"


@dataclass(frozen=True)
class KeyRing:
    """The configured keys. ``write`` holds the settings' plain write keys (the demo shop embeds one)."""

    entries: tuple[KeyEntry, ...]
    write: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: PulseSettings) -> KeyRing:
        """The keys of PULSE_WRITE_KEYS / READ_KEYS / ADMIN_KEYS, else in dev mode the dev keys."""
        configured = {
            Scope.WRITE: settings.write_keys,
            Scope.READ: settings.read_keys,
            Scope.ADMIN: settings.admin_keys,
        }
        if not any(configured.values()):
            if settings.dev_mode:
                configured = {Scope.WRITE: [DEV_WRITE_KEY], Scope.READ: [DEV_READ_KEY], Scope.ADMIN: []}
            elif settings.keys_file is None:
                raise MissingKeysError(
                    "No API keys: set PULSE_WRITE_KEYS and PULSE_READ_KEYS (comma-separated) "
                    "or PULSE_KEYS_FILE, or PULSE_DEV_MODE=true for the local dev keys."
                )
        entries = []
        for scope, keys in configured.items():
            variable = f"PULSE_{scope.value.upper()}_KEYS"
            for number, entry in enumerate(keys, 1):
                entries.append(
                    KeyEntry(
                        digest_of_entry(entry, f"{variable} entry {number}"),
                        frozenset({scope}),
                        f"{variable}[{number}]",
                    )
                )
        plain_write = tuple(k for k in configured[Scope.WRITE] if not k.startswith(HASH_PREFIX))
        return cls(tuple(entries), plain_write)

    def with_entries(self, extra: Iterable[KeyEntry]) -> KeyRing:
        return KeyRing(self.entries + tuple(extra), self.write)

    def scopes_of(self, key: str) -> set[Scope]:
        """The scopes a key grants (empty for an unknown key).

        Compares the key's digest with every entry, without stopping at a match, so the time
        taken does not depend on which entry (if any) matches.
        """
        given = _digest(key)
        scopes: set[Scope] = set()
        for entry in self.entries:
            if hmac.compare_digest(given, entry.digest):
                scopes |= entry.scopes
        return scopes

    def __len__(self) -> int:
        return len(self.entries)


def key_from_headers(x_pulse_key: str | None, authorization: str | None) -> str | None:
    """The key of a request: ``X-Pulse-Key``, else ``Authorization: Bearer <key>``."""
    if x_pulse_key:
        return x_pulse_key.strip()
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None
