"""API keys: write keys send events, read keys read and forget profiles."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from enum import Enum

from orchestration.settings import DEV_READ_KEY, DEV_WRITE_KEY, PulseSettings


class Scope(str, Enum):
    WRITE = "write"
    READ = "read"


class MissingKeysError(RuntimeError):
    """Start-up error: no keys are configured outside local dev."""


@dataclass(frozen=True)
class KeyRing:
    """The configured keys of each scope."""

    write: tuple[str, ...]
    read: tuple[str, ...]

    @classmethod
    def from_settings(cls, settings: PulseSettings) -> KeyRing:
        write, read = tuple(settings.write_keys), tuple(settings.read_keys)
        if not write and not read:
            if not settings.dev_mode:
                raise MissingKeysError(
                    "No API keys: set PULSE_WRITE_KEYS and PULSE_READ_KEYS (comma-separated), "
                    "or PULSE_DEV_MODE=true for the local dev keys."
                )
            write, read = (DEV_WRITE_KEY,), (DEV_READ_KEY,)
        return cls(write, read)

    def scopes_of(self, key: str) -> set[Scope]:
        """The scopes a key grants (empty for an unknown key); constant-time per key."""
        scopes = set()
        given = key.encode("utf-8", "surrogatepass")  # compare bytes: compare_digest rejects non-ASCII str
        if any(hmac.compare_digest(given, k.encode()) for k in self.write):
            scopes.add(Scope.WRITE)
        if any(hmac.compare_digest(given, k.encode()) for k in self.read):
            scopes.add(Scope.READ)
        return scopes


def key_from_headers(x_pulse_key: str | None, authorization: str | None) -> str | None:
    """The key of a request: ``X-Pulse-Key``, else ``Authorization: Bearer <key>``."""
    if x_pulse_key:
        return x_pulse_key.strip()
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None
