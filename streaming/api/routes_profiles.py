"""Serving: profiles and decisions out (read keys), and forget-me."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import Response
from pydantic import BaseModel, Field

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


class IdentityLink(BaseModel):
    """A link between two user ids: the earliest identify (or alias) naming one as the other's."""

    ids: list[str] = Field(description="the two user ids, smaller first")
    event_id: str = Field(description="the linking event")
    timestamp: str = Field(description="its event time, ISO 8601")
    status: Literal["merged", "refused"] = Field(description="refused: past PULSE_IDENTITY_MAX_IDS")


class AnonymousLink(BaseModel):
    """An anonymous id of the person, with the user whose earliest link owns it."""

    id: str
    user_id: str | None
    linked_at: str | None = Field(description="event time of that link, ISO 8601")
    event_id: str | None = Field(description="the earliest identify naming it (null: other events linked it)")


class UnlinkedPair(BaseModel):
    """Two ids `pulse identity unlink` separated for good."""

    ids: list[str]
    unlinked_at: str


class IdentityRecord(BaseModel):
    """Who an id is: its person and every link that made it (docs/identity.md)."""

    profile_id: str = Field(description="the id asked for")
    person_id: str = Field(description="the person's canonical id: the smallest of its user ids")
    user_ids: list[str]
    anonymous_ids: list[AnonymousLink]
    links: list[IdentityLink] = Field(description="links between its user ids that merged")
    refused_links: list[IdentityLink] = Field(description="links of its user ids the limit refused")
    unlinked: list[UnlinkedPair]
    max_ids: int = Field(description="PULSE_IDENTITY_MAX_IDS")


@router.get(
    "/v1/profiles/{profile_id}/identity",
    tags=["profiles"],
    dependencies=[require(Scope.READ)],
    response_model=IdentityRecord,
    responses={404: {"description": "unknown id"}},
)
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
    """Forget the person (every id of it) now: none of its events up to now is ever counted again, later
    ones start a new profile. Durable before the answer; archive rows go in the next forget run."""
    existed = store.forget(profile_id)
    return {"profile_id": profile_id, "forgotten": existed}
