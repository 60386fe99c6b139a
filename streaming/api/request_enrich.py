"""Enrichment from the request: the collector's per-event step before IP anonymization and Kafka.

A *browser* request (an ``Origin`` header, which browsers send with every cross-origin and
every POST request, or the tracker's ``?key=``) gives its events the client IP and user agent
they lack; a server request (an SDK with its key in a header) does not, by default, since its
address and user agent are the server's (``PULSE_REQUEST_CONTEXT``). Every event then gets
``metadata.context`` (``enrichment.request_context``); browser events of known bots are tagged
there. Server-side events are never tagged as bots.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from core.settings import PulseSettings
from enrichment.campaigns import CampaignIndex
from enrichment.geo import GeoIndex
from enrichment.networks import NetworkSet
from enrichment.request_context import CONTEXT_FIELD, bot_reason, event_context
from enrichment.user_agent import UserAgentParser
from streaming.api.client_ip import client_ip

Enrich = Callable[[Any], Any]


def is_browser_request(headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
    """Sent by a web page: browsers add ``Origin`` to POSTs; the tracker's beacons carry ``?key=``."""
    return "origin" in headers or "key" in query


class RequestEnricher:
    """Settings-derived parts of request enrichment; ``for_request`` makes the per-event function."""

    def __init__(
        self,
        settings: PulseSettings,
        *,
        geo: Callable[[], GeoIndex] = GeoIndex,
        campaigns: Callable[[], CampaignIndex] = CampaignIndex,
    ) -> None:
        """Raises ``InvalidNetworkError`` on a bad PULSE_TRUSTED_PROXIES or PULSE_BOT_IP_DENYLIST entry."""
        self.trusted = NetworkSet.parse(settings.trusted_proxies, "PULSE_TRUSTED_PROXIES")
        self.denylist = NetworkSet.parse(settings.bot_ip_denylist, "PULSE_BOT_IP_DENYLIST")
        self.parse_agent = UserAgentParser(settings.user_agent_cache_size)
        self.mode = settings.request_context
        self.bot_detection = settings.bot_detection
        self.geo = geo
        self.campaigns = campaigns

    def for_request(self, headers: Mapping[str, str], query: Mapping[str, str], peer: str | None) -> Enrich:
        """The enrichment of one request's events (``headers`` keyed in lower case)."""
        browser = is_browser_request(headers, query)
        fill = self.mode == "all" or (self.mode == "browser" and browser)
        ip = client_ip(peer, headers.get("x-forwarded-for"), self.trusted) if fill else None
        agent_text = headers.get("user-agent") if fill else None
        tag_bots = browser and self.bot_detection
        geo, campaigns = self.geo(), self.campaigns()

        def enrich(obj: Any) -> Any:
            if not isinstance(obj, dict):
                return obj
            metadata = obj.get("metadata")
            if metadata is None:
                metadata = {}
            elif not isinstance(metadata, dict):
                return obj  # the contract rejects it
            metadata = dict(metadata)
            if ip and metadata.get("ip") is None:
                metadata["ip"] = ip
            if agent_text and metadata.get("user_agent") is None:
                metadata["user_agent"] = agent_text
            agent = self.parse_agent(metadata.get("user_agent"))
            reason = bot_reason(agent, metadata.get("ip"), self.denylist) if tag_bots else None
            # The collector owns metadata.context: a client cannot vouch for itself.
            metadata.pop(CONTEXT_FIELD, None)
            context = event_context(metadata, agent=agent, geo=geo, campaigns=campaigns, bot=reason)
            if context:
                metadata[CONTEXT_FIELD] = context
            if not metadata and "metadata" not in obj:
                return obj
            return {**obj, "metadata": metadata}

        return enrich
