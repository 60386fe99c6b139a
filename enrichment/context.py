"""What geo and campaign reference data add to an event (pure), for rule contexts and profiles."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from enrichment.campaigns import CampaignIndex
from enrichment.geo import GEO_FIELDS, GeoIndex

CAMPAIGN_FIELDS = ("campaign_id", "name", "channel", "match")


def enrich_context(
    metadata: Mapping[str, Any] | None, *, geo: GeoIndex, campaigns: CampaignIndex
) -> dict[str, dict[str, str | None]]:
    """``{"geo": {country, region, city}, "campaign": {campaign_id, name, channel, match}}`` for an event's
    metadata.

    The shape never changes: unknown values are None, so a rule can test
    ``geo.country == "DE"`` without first checking the key exists. Geo comes from
    ``metadata.ip``; the campaign from ``metadata.utm_source``/``utm_medium``/``utm_campaign`` (or
    ``utm_name``, where collectors before 2026-11-29 put Segment's ``context.campaign.name``).
    """
    metadata = metadata if isinstance(metadata, Mapping) else {}
    place = geo.lookup(metadata.get("ip"))
    # Archived Segment events from before 2026-11-29 carry context.campaign.name as utm_name.
    campaign_name = metadata.get("utm_campaign") or metadata.get("utm_name")
    found = campaigns.lookup(metadata.get("utm_source"), metadata.get("utm_medium"), campaign_name)
    campaign: dict[str, str | None] = dict.fromkeys(CAMPAIGN_FIELDS)
    if found is not None:
        attributes, match = found
        campaign.update({name: attributes.get(name) for name in CAMPAIGN_FIELDS[:-1]}, match=match)
    return {
        "geo": {name: place.get(name) if place else None for name in GEO_FIELDS},
        "campaign": campaign,
    }
