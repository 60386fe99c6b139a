"""User agents (pure): device type, browser, OS and bot flag, parsed once per distinct string.

ua-parser (with its ``ua-parser-builtins`` rules) names the browser, OS and device; a user
agent is a bot when crawlerdetect (JayBizzle's CrawlerDetect list, which also knows curl,
python-requests and headless browsers) matches it, or when ua-parser calls its device a
"Spider". An uncached parse costs about a millisecond, so ``UserAgentParser`` keeps the last
distinct strings in an LRU: real traffic has few distinct user agents.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, NamedTuple

import ua_parser
from crawlerdetect import CrawlerDetect

#: Longer user agents are cut before parsing (and caching): real ones are under 512 characters.
MAX_USER_AGENT_CHARS = 1024
_DESKTOP_OS = frozenset(
    {"Windows", "Mac OS X", "Linux", "Ubuntu", "Fedora", "Debian", "Chrome OS", "FreeBSD"}
)
_TABLET_DEVICES = ("iPad", "Kindle", "Tablet")


class UserAgentInfo(NamedTuple):
    """What a user agent says; ``device_type`` is desktop, mobile, tablet, bot or other."""

    device_type: str
    browser: str | None
    browser_version: str | None
    os: str | None
    os_version: str | None
    brand: str | None
    model: str | None
    bot: bool

    def as_context(self) -> dict[str, Any]:
        """The ``metadata.context.device`` object: only the known values."""
        fields = ("type", "browser", "browser_version", "os", "os_version", "brand", "model")
        return {name: value for name, value in zip(fields, self[:7], strict=True) if value is not None}


def _version(part: Any) -> str | None:
    if part is None or part.major is None:
        return None
    return ".".join(v for v in (part.major, part.minor) if v is not None)


def _device_type(text: str, os_family: str | None, device_family: str | None) -> str:
    if device_family and device_family.startswith(_TABLET_DEVICES):
        return "tablet"
    if os_family in ("iOS", "Android"):
        # Android phones say "Mobile"; Android tablets do not (Google's guidance to vendors).
        return "mobile" if "Mobile" in text or os_family == "iOS" else "tablet"
    if os_family in _DESKTOP_OS:
        return "desktop"
    return "other"


class UserAgentParser:
    """Parses user agents through an LRU of ``cache_size`` distinct strings (0: no cache).

    Not thread-safe (crawlerdetect keeps its last match on the instance): use one per thread;
    the collector parses on its event loop.
    """

    def __init__(self, cache_size: int = 8192) -> None:
        self._crawlers = CrawlerDetect()
        self.parse = lru_cache(maxsize=cache_size)(self._parse) if cache_size else self._parse

    def _parse(self, text: str) -> UserAgentInfo:
        result = ua_parser.parse(text)
        agent, system, device = result.user_agent, result.os, result.device
        os_family = system.family if system is not None and system.family != "Other" else None
        device_family = device.family if device is not None else None
        bot = device_family == "Spider" or self._crawlers.isCrawler(text)
        return UserAgentInfo(
            device_type="bot" if bot else _device_type(text, os_family, device_family),
            browser=agent.family if agent is not None and agent.family != "Other" else None,
            browser_version=_version(agent),
            os=os_family,
            os_version=_version(system),
            brand=device.brand if device is not None and device.brand not in (None, "Spider") else None,
            model=device.model if device is not None and device.brand not in (None, "Spider") else None,
            bot=bot,
        )

    def __call__(self, user_agent: object) -> UserAgentInfo | None:
        """The parse of ``user_agent``, or None when it is not a non-empty string."""
        if not isinstance(user_agent, str) or not user_agent.strip():
            return None
        return self.parse(user_agent[:MAX_USER_AGENT_CHARS])
