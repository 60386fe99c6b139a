"""The client's address behind trusted proxies (pure): X-Forwarded-For only from PULSE_TRUSTED_PROXIES."""

from __future__ import annotations

from core.ip_address import packed_ip
from enrichment.networks import NetworkSet


def client_ip(peer: str | None, forwarded_for: str | None, trusted: NetworkSet) -> str | None:
    """The address that sent the request.

    The TCP peer, unless it is a trusted proxy: then X-Forwarded-For is read from the right
    (each proxy appends the address it received from), skipping trusted proxies, and the first
    untrusted hop is the client. Entries left of it were written by the client and can be forged;
    a malformed hop on the way gives None.
    """
    if not peer or not forwarded_for or peer not in trusted:
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if packed_ip(hop) is None:
            return None  # a malformed hop: the client is unknown, not whatever the header says
        if hop not in trusted:
            return hop
    return hops[0] if hops else peer
