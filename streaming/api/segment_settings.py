"""The settings document Segment's browser library (analytics-next) loads at start-up (pure).

analytics-next fetches ``{cdnURL}/v1/projects/{writeKey}/settings`` before it sends anything
(``loadCDNSettings`` in its ``src/browser/index.ts``). Pulse answers with a source whose only
destination is the "Segment.io" integration, its ``apiHost`` and ``protocol`` pointing at Pulse,
so the library sends every call to Pulse and loads nothing from Segment's CDN (see docs/segment.md).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit


class SegmentApiUrlError(ValueError):
    """PULSE_SEGMENT_API_URL is not an absolute http(s) URL."""


def split_api_url(url: str) -> tuple[str, str]:
    """``https://pulse.example.com/v1`` -> (``https``, ``pulse.example.com/v1``): analytics-next's
    ``protocol`` and ``apiHost`` (it posts to ``{protocol}://{apiHost}/t`` and the like)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise SegmentApiUrlError(
            f"PULSE_SEGMENT_API_URL must be an http(s) URL such as https://pulse.example.com/v1, got {url!r}"
        )
    return parts.scheme, parts.netloc + parts.path.rstrip("/")


def browser_settings(write_key: str, api_url: str) -> dict[str, Any]:
    """The settings of the source ``write_key`` that send analytics-next's calls to ``api_url``.

    Exactly one integration (more would make the library fetch device-mode destinations from
    Segment's CDN); no routing rules, middleware or remote plugins (each would load a bundle from
    the CDN); remote metrics off (they would go to ``apiHost``/m, which Pulse does not serve).
    """
    protocol, api_host = split_api_url(api_url)
    return {
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": api_host,
                "protocol": protocol,
                # Pulse does not read _metadata.bundled/unbundled: no need to send it with every call.
                "addBundledMetadata": False,
                "versionSettings": {"componentTypes": ["browser"]},
            }
        },
        "plan": {
            "track": {"__default": {"enabled": True, "integrations": {}}},
            "identify": {"__default": {"enabled": True}},
            "group": {"__default": {"enabled": True}},
        },
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "metrics": {"sampleRate": 0},
        "legacyVideoPluginsEnabled": False,
        "remotePlugins": [],
        "edgeFunction": {},
    }
