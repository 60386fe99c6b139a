"""Address lists (pure): proxies to trust, addresses to treat as bots; IPs and CIDRs, v4 and v6."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from core.ip_address import parse_ip


class InvalidNetworkError(ValueError):
    """A configured address or CIDR does not parse; the message names the setting and the entry."""


@dataclass(frozen=True)
class NetworkSet:
    """Networks as (IP version, first, last) integer ranges; a handful, so a scan is fastest."""

    ranges: tuple[tuple[int, int, int], ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str], setting: str) -> NetworkSet:
        """From ``10.0.0.0/8``, ``192.0.2.7`` or ``2001:db8::/32`` entries; raises on a bad one."""
        ranges = []
        for entry in entries:
            try:
                network = ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError:
                raise InvalidNetworkError(
                    f"{setting}: {entry!r} is not an IP address or CIDR (e.g. 10.0.0.0/8 or 2001:db8::/32)"
                ) from None
            first, last = int(network.network_address), int(network.broadcast_address)
            ranges.append((network.version, first, last))
        return cls(tuple(ranges))

    def __bool__(self) -> bool:
        return bool(self.ranges)

    def __contains__(self, address: object) -> bool:
        parsed = parse_ip(address)
        if parsed is None:
            return False
        version, value = parsed
        return any(v == version and first <= value <= last for v, first, last in self.ranges)
