"""``metadata.context``: what the collector adds to an event from its request and reference data (pure).

The collector writes it once, before the event reaches Kafka, so every engine (the profile
app, the archive, the DuckDB recompute, a replay) reads the same device, geo, campaign and bot
tag from the event itself, whatever reference data version is current later.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from enrichment.campaigns import CampaignIndex
from enrichment.geo import GEO_FIELDS, GeoIndex
from enrichment.networks import NetworkSet
from enrichment.user_agent import UserAgentInfo

CONTEXT_FIELD = "context"
#: UTM metadata fields and their names in ``context.campaign``.
UTM_NAMES = {
    "utm_source": "source",
    "utm_medium": "medium",
    "utm_campaign": "name",
    "utm_term": "term",
    "utm_content": "content",
}
#: Reference campaign attributes copied when the UTM values match a campaign.
MATCHED_FIELDS = ("campaign_id", "channel")


def bot_reason(agent: UserAgentInfo | None, ip: object, denylist: NetworkSet) -> str | None:
    """Why an event counts as a bot's: ``user_agent`` (a known bot) or ``ip`` (denied), else None."""
    if agent is not None and agent.bot:
        return "user_agent"
    if denylist and ip in denylist:
        return "ip"
    return None


def campaign_context(metadata: Mapping[str, Any], campaigns: CampaignIndex) -> dict[str, Any] | None:
    """``{source, medium, name, term, content}`` of the UTM fields present, plus the matched campaign's
    ``campaign_id``/``channel``; None without utm_source or utm_medium."""
    found = {
        name: value.strip()
        for field, name in UTM_NAMES.items()
        if isinstance(value := metadata.get(field), str) and value.strip()
    }
    if "source" not in found and "medium" not in found:
        return None
    match = campaigns.lookup(found.get("source"), found.get("medium"), found.get("name"))
    if match is not None:
        attributes, _how = match
        found.update({name: attributes[name] for name in MATCHED_FIELDS if attributes.get(name)})
    return found


def event_context(
    metadata: Mapping[str, Any],
    *,
    agent: UserAgentInfo | None,
    geo: GeoIndex,
    campaigns: CampaignIndex,
    bot: str | None,
) -> dict[str, Any]:
    """The ``metadata.context`` object of an event: only what is known.

    ``device`` from the parsed user agent, ``geo`` from ``metadata.ip`` (looked up before the IP
    is anonymized), ``campaign`` from the UTM fields, and ``bot: true`` with ``bot_reason`` when
    ``bot`` names one.
    """
    context: dict[str, Any] = {}
    if agent is not None:
        context["device"] = agent.as_context()
    place = geo.lookup(metadata.get("ip")) if len(geo) else None
    if place:
        located = {name: place[name] for name in GEO_FIELDS if place.get(name)}
        if located:
            context["geo"] = located
    campaign = campaign_context(metadata, campaigns)
    if campaign:
        context["campaign"] = campaign
    if bot is not None:
        context["bot"] = True
        context["bot_reason"] = bot
    return context


def is_bot_event(metadata: Mapping[str, Any]) -> bool:
    """Whether the collector tagged the event as a bot's (``metadata.context.bot`` is true)."""
    context = metadata.get(CONTEXT_FIELD)
    return isinstance(context, dict) and context.get("bot") is True
