"""FastAPI dependencies of the routes: the API key a route requires, and the profile store."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException, Request

from streaming.api.auth import Scope, denial, grants, key_from_headers
from streaming.api.services import services_of
from streaming.profiles.store import RedisProfileStore


def _authorized_key(
    request: Request, scope: Scope, x_pulse_key: str | None, authorization: str | None
) -> str:
    key = key_from_headers(x_pulse_key, authorization)
    if key is None and scope is Scope.WRITE:
        key = request.query_params.get("key") or None  # sendBeacon cannot set headers; never for reads
    if key is None:
        raise HTTPException(401, "missing API key: send it in X-Pulse-Key or Authorization: Bearer")
    scopes = services_of(request).keys.scopes_of(key)
    if not scopes:
        raise HTTPException(401, "unknown API key")
    if not grants(scopes, scope):
        raise HTTPException(403, denial(scope))
    return key


def require(scope: Scope) -> Any:
    """Dependency: the request's API key, which must grant ``scope`` (401 or 403 otherwise)."""

    async def check(  # async: pure CPU, so FastAPI need not hop to its thread pool
        request: Request,
        x_pulse_key: Annotated[str | None, Header()] = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> str:
        return _authorized_key(request, scope, x_pulse_key, authorization)

    return Depends(check)


async def _check_forget(  # async: pure CPU, so FastAPI need not hop to its thread pool
    request: Request,
    x_pulse_key: Annotated[str | None, Header()] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> str:
    return _authorized_key(request, services_of(request).forget_scope, x_pulse_key, authorization)


#: Dependency: a key that may forget users (an admin key when PULSE_FORGET_REQUIRES_ADMIN is on).
require_forget: Any = Depends(_check_forget)


async def profile_store(request: Request) -> RedisProfileStore:
    """The profile store (async: as a dependency, a plain lookup needs no thread-pool hop)."""
    return services_of(request).store
