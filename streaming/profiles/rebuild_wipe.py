"""Wipe profile parts for a rebuild, and restore what a rebuild keeps (I/O: Redis).

A part is wiped in one script call that runs between the stream's updates: its state keys and
every one of its ``event_id`` markers go together (streaming/profiles/wipe.lua). Markers are
found with SCAN first; the call checks that the part has not been updated since (its version),
else the part is looked at again. Parts the stream keeps updating through ``SCAN_ROUNDS`` rounds
are wiped with the SCAN inside the call, one call for all of them on one server.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources

from core.redis_client import RedisClient, is_cluster, primaries
from streaming.profiles.codec import decode, pack
from streaming.profiles.keys import fields_key, profile_keys, rebuild_kept_key
from streaming.profiles.rebuild_plan import ALL_MARKERS_PATTERN, marker_pattern, marker_profile, part_version

logger = logging.getLogger(__name__)

_WIPE = resources.files("streaming.profiles").joinpath("wipe.lua").read_text()
_RESTORE = resources.files("streaming.profiles").joinpath("restore.lua").read_text()
#: Rounds of SCAN-then-check before the SCAN runs inside the script.
SCAN_ROUNDS = 3
#: Up to this many parts get a SCAN pattern each; more share one pattern of every marker.
FEW_PARTS = 16
#: Parts per script call (one server; a cluster call holds one part).
CHUNK = 100


@dataclass
class WipeSummary:
    parts: int = 0
    markers_deleted: int = 0
    #: Parts updated by the stream while their markers were looked for (looked at again).
    retried: int = 0
    #: Parts wiped with the SCAN inside the script (the last resort).
    scanned_in_script: int = 0


class PartWiper:
    """Wipes parts for a rebuild and restores their kept fields afterwards."""

    def __init__(self, client: RedisClient) -> None:
        self._client = client
        self._cluster = is_cluster(client)
        self._wipe = client.register_script(_WIPE)
        self._restore = client.register_script(_RESTORE)

    def wipe(
        self,
        ids: Sequence[str],
        progress: Callable[[int, int], None] | None = None,
        on_wiped: Callable[[list[str]], None] | None = None,
    ) -> WipeSummary:
        """Wipe every part in ``ids`` (state and markers), each atomically; ``progress(done, total)``.

        ``on_wiped(ids)`` is called with the parts of each call as soon as they are wiped.
        """
        summary = WipeSummary()
        pending = list(dict.fromkeys(ids))
        total = len(pending)
        for round_number in range(1, SCAN_ROUNDS + 2):
            if not pending:
                break
            in_script = round_number > SCAN_ROUNDS
            versions = self._versions(pending)  # before the SCAN: a marker made later changes it
            markers = {} if in_script else self._find_markers(pending)
            changed: list[str] = []
            for chunk in self._chunks(pending, in_script):
                args = [[versions[pid], markers.get(pid, [])] for pid in chunk]
                keys = [key for pid in chunk for key in self._part_keys(pid)]
                pattern = (
                    (ALL_MARKERS_PATTERN if len(chunk) > 1 else marker_pattern(chunk[0])) if in_script else ""
                )
                replies = self._wipe(keys=keys, args=[pack(args), pattern])
                wiped = []
                for pid, deleted in zip(chunk, replies, strict=True):
                    if int(deleted) < 0:
                        changed.append(pid)
                    else:
                        wiped.append(pid)
                        summary.markers_deleted += int(deleted)
                summary.parts += len(wiped)
                summary.scanned_in_script += len(wiped) if in_script else 0
                if on_wiped is not None and wiped:
                    on_wiped(wiped)
                if progress is not None:
                    progress(summary.parts, total)
            summary.retried += len(changed)
            if changed:
                logger.info("%d parts were updated while their markers were looked for; again", len(changed))
            pending = changed
        return summary

    def restore(self, ids: Sequence[str]) -> int:
        """Put the kept fields back on the parts that have events again; return how many fields."""
        restored = 0
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            if self._cluster:
                restored += sum(int(self._restore(keys=[fields_key(p), rebuild_kept_key(p)])) for p in chunk)
                continue
            pipe = self._client.pipeline(transaction=False)
            for pid in chunk:
                self._restore(keys=[fields_key(pid), rebuild_kept_key(pid)], client=pipe)
            restored += sum(int(n) for n in pipe.execute())
        return restored

    def _chunks(self, ids: list[str], in_script: bool) -> list[list[str]]:
        if self._cluster:
            return [[pid] for pid in ids]
        if in_script:
            return [ids]  # one walk of the keyspace for all of them
        return [ids[i : i + CHUNK] for i in range(0, len(ids), CHUNK)]

    @staticmethod
    def _part_keys(profile_id: str) -> tuple[str, ...]:
        keys = profile_keys(profile_id)
        return (*keys.state_keys, rebuild_kept_key(profile_id))

    def _versions(self, ids: Sequence[str]) -> dict[str, str]:
        versions = {}
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            pipe = self._client.pipeline(transaction=False)
            for pid in chunk:
                pipe.hmget(fields_key(pid), "event_count", "updated_at")
            for pid, (count, updated) in zip(chunk, pipe.execute(), strict=True):
                versions[pid] = part_version(count and decode(count), updated and decode(updated))
        return versions

    def _find_markers(self, ids: Sequence[str]) -> dict[str, list[str]]:
        """Marker keys of each part (SCAN on every master: it never blocks a server)."""
        wanted = set(ids)
        patterns = [marker_pattern(pid) for pid in ids] if len(ids) <= FEW_PARTS else [ALL_MARKERS_PATTERN]
        found: dict[str, list[str]] = {}
        for node in primaries(self._client):
            for pattern in patterns:
                for key in node.scan_iter(match=pattern, count=1000):
                    text = decode(key)
                    owner = marker_profile(text)
                    if owner in wanted:
                        found.setdefault(owner, []).append(text)
        return found
