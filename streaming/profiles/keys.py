"""Redis key layout of one profile (pure).

Every key of one profile shares the hash tag ``{<id>}`` so a per-profile update touches a
single Redis Cluster slot. Braces and ``%`` in ids are percent-encoded, so no id can
change another id's hash tag or collide with another id's keys.
"""

from __future__ import annotations

from binascii import crc_hqx
from dataclasses import dataclass

KEY_PREFIX = "pulse"
FORGET_STREAM = f"{KEY_PREFIX}:forget"
#: The byte offset up to which Redis mirrors the durable forget record (streaming/profiles/suppression.py);
#: gone after a wipe, which update.lua notices before it applies anything.
FORGET_MIRROR_KEY = f"{KEY_PREFIX}:forget:mirror"
#: User links refused by the per-person limit (hash "<a> <b>" -> JSON), see identity_graph.py.
REFUSED_LINKS = f"{KEY_PREFIX}:identity:refused"
#: Hash slots of a Redis Cluster.
CLUSTER_SLOTS = 16384


def encode_id(profile_id: str) -> str:
    """Escape the characters that would break the hash tag or make keys ambiguous."""
    if "%" not in profile_id and "{" not in profile_id and "}" not in profile_id:
        return profile_id
    return profile_id.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")


@dataclass(frozen=True, slots=True)
class ProfileKeys:
    """All Redis keys of one profile."""

    fields: str
    anonymous_ids: str
    products: str
    sessions: str
    decisions: str
    fires: str
    owner: str
    links: str
    unlinked: str
    seen_prefix: str

    @property
    def state_keys(self) -> tuple[str, str, str, str]:
        """Keys holding the profile itself (``update.lua`` derives them from ``fields``)."""
        return (self.fields, self.anonymous_ids, self.products, self.sessions)


def decode_id(encoded: str) -> str:
    """Inverse of ``encode_id``."""
    return encoded.replace("%7D", "}").replace("%7B", "{").replace("%25", "%")


def _base(profile_id: str) -> str:
    return f"{KEY_PREFIX}:{{{encode_id(profile_id)}}}"


def profile_slot(profile_id: str) -> int:
    """The Redis Cluster slot of every key of the profile: CRC16 of its hash tag (ids are never empty)."""
    return crc_hqx(encode_id(profile_id).encode(), 0) % CLUSTER_SLOTS


def fields_key(profile_id: str) -> str:
    """The profile's fields hash (what ``update.lua`` receives as KEYS); cheaper than profile_keys."""
    return f"{_base(profile_id)}:p"


def decision_keys(profile_id: str) -> tuple[str, str]:
    """The profile's decisions and fire-state hashes; cheaper than profile_keys."""
    base = _base(profile_id)
    return f"{base}:decisions", f"{base}:fires"


def forgotten_key(profile_id: str) -> str:
    """The id's suppression (hash: ``at`` = forget time ms, ``skipped`` = events the stream skipped).

    In the profile's slot, so update.lua checks it atomically with the update.
    """
    return f"{_base(profile_id)}:forgotten"


def owner_key(anonymous_id: str) -> str:
    """Users an anonymous id was seen with (zset, score = earliest event time); the lowest owns it."""
    return f"{_base(anonymous_id)}:owner"


def rebuild_kept_key(profile_id: str) -> str:
    """Fields a rebuild keeps while it re-applies the profile's events (streaming/profiles/wipe.lua)."""
    return f"{_base(profile_id)}:rebuild"


def links_key(user_id: str) -> str:
    """Identify links a user made (hash: anonymous id -> "<earliest event ms>:<event_id>")."""
    return f"{_base(user_id)}:links"


def refused_field(id_a: str, id_b: str) -> str:
    """The field of a user link in ``REFUSED_LINKS``: "<a> <b>", the smaller id first."""
    return f"{min(id_a, id_b)} {max(id_a, id_b)}"


def unlinked_key(profile_id: str) -> str:
    """Ids unlinked from this one by ``pulse identity unlink`` (hash: other id -> unlink time ms)."""
    return f"{_base(profile_id)}:unlinked"


def profile_keys(profile_id: str) -> ProfileKeys:
    """Keys of the profile with the given user_id or anonymous_id."""
    base = _base(profile_id)
    return ProfileKeys(
        fields=f"{base}:p",
        anonymous_ids=f"{base}:anon",
        products=f"{base}:products",
        sessions=f"{base}:sessions",
        decisions=f"{base}:decisions",
        fires=f"{base}:fires",
        owner=f"{base}:owner",
        links=f"{base}:links",
        unlinked=f"{base}:unlinked",
        seen_prefix=f"{base}:seen:",
    )
