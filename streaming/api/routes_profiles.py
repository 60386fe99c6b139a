"""Serving: profiles and decisions out (read keys), and forget-me."""

from __future__ import annotations

from typing import Any

import msgspec
from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import Response

from streaming.api.auth import Scope
from streaming.api.dependencies import profile_store, require, require_forget
from streaming.profiles.store import RedisProfileStore

router = APIRouter()


@router.get("/v1/profiles/{profile_id}", tags=["profiles"], dependencies=[require(Scope.READ)])
def get_profile(profile_id: str, store: RedisProfileStore = Depends(profile_store)) -> dict[str, Any]:
    """The profile of a user_id, or the merged profile of the user an anonymous_id is stitched to."""
    profile = store.get_person(profile_id)
    if profile is None:
        raise HTTPException(404, f"no profile for {profile_id!r}")
    return profile


@router.get("/v1/profiles/{profile_id}/identity", tags=["profiles"], dependencies=[require(Scope.READ)])
def get_identity(profile_id: str, store: RedisProfileStore = Depends(profile_store)) -> dict[str, Any]:
    """The person an id belongs to: its canonical id, user ids, anonymous ids, every link between its
    user ids with the event that made it, the links refused by PULSE_IDENTITY_MAX_IDS, and unlinks."""
    view = store.identity_view(profile_id)
    if view is None:
        raise HTTPException(404, f"no profile for {profile_id!r}")
    return view


@router.get("/v1/decisions/{profile_id}", tags=["profiles"], dependencies=[require(Scope.READ)])
async def get_decisions(profile_id: str, store: RedisProfileStore = Depends(profile_store)) -> Response:
    """Current personalization decisions of a user: fired rules, offers, intent score."""
    # Two or three pipelined Redis round trips (~0.1 ms): cheaper inline than a thread-pool hop.
    view = store.decisions_view(profile_id)
    if view is None:
        raise HTTPException(404, f"no profile for {profile_id!r}")
    return Response(msgspec.json.encode(view), media_type="application/json")  # hot path: skip re-validation


@router.delete("/v1/profiles/{profile_id}", status_code=202, tags=["profiles"], dependencies=[require_forget])
def forget_profile(profile_id: str, store: RedisProfileStore = Depends(profile_store)) -> dict[str, Any]:
    """Forget a user: profile, decisions and identity links now; archive rows in the next batch run."""
    existed = store.forget(profile_id)
    return {"profile_id": profile_id, "forgotten": existed}
