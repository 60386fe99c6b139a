"""Redis Cluster routing: which master holds a profile's slot, and when the slot map must be re-read."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import redis
from redis.cluster import ClusterNode

from core.redis_client import RedisClient
from streaming.profiles.keys import profile_slot

T = TypeVar("T")


class ClusterTopologyChanged(redis.exceptions.ConnectionError):
    """A cluster node answered MOVED, ASK, TRYAGAIN or CLUSTERDOWN, or a slot had no node.

    The slot map is re-read before the next write; the batch must be sent again (every delta
    is idempotent). A ``ConnectionError``, so the profile app pauses and retries the checkpoint.
    """


def topology_error(exc: BaseException) -> bool:
    """A reply saying the slot map is out of date: MOVED, ASK, TRYAGAIN, CLUSTERDOWN.

    A script call whose keys are not declared (a cluster call spanning slots) gets no MOVED
    but an error from inside the script when it touches a slot its node no longer serves.
    The script touches a delta's marker first, so the deltas before it were applied whole
    and the rest not at all.
    """
    if isinstance(
        exc, (redis.exceptions.AskError, redis.exceptions.TryAgainError, redis.exceptions.ClusterDownError)
    ):
        return True  # MovedError is an AskError
    text = str(exc) if isinstance(exc, redis.ResponseError) else ""
    return "non local key" in text or "cluster is down" in text


class ClusterRouting:
    """Routing of a store's writes to the masters of a Redis Cluster (a mixin of RedisProfileStore).

    Expects ``self._client`` (the Redis client), ``self._cluster`` (whether it is a
    ``RedisCluster``) and ``self._slots_stale`` (the slot map must be re-read first).
    """

    _client: RedisClient
    _cluster: bool
    _slots_stale: bool

    def by_node(
        self, items: Sequence[T], profile_id: Callable[[T], str]
    ) -> list[tuple[ClusterNode | None, Sequence[T]]]:
        """``items`` grouped by the master holding their profile's slot; one group (None) on one server."""
        if not self._cluster:
            return [(None, items)]
        nodes = self._client.nodes_manager
        if self._slots_stale:
            self._refresh_slots()
        groups: dict[str, tuple[ClusterNode, list[T]]] = {}
        node_of: dict[str, ClusterNode] = {}
        try:
            for item in items:
                pid = profile_id(item)
                node = node_of.get(pid)
                if node is None:
                    node = node_of[pid] = nodes.get_node_from_slot(profile_slot(pid))
                group = groups.get(node.name)
                if group is None:
                    group = groups[node.name] = (node, [])
                group[1].append(item)
        except redis.exceptions.SlotNotCoveredError as exc:
            self._slots_stale = True
            raise ClusterTopologyChanged(f"a slot has no master: {exc}") from exc
        return list(groups.values())

    def slots_changed(self) -> None:
        """Re-read the cluster's slot map before the next routed write."""
        self._slots_stale = self._cluster

    def _refresh_slots(self) -> None:
        try:
            self._client.nodes_manager.initialize()
        except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
            raise ClusterTopologyChanged(f"cannot read the cluster's slot map: {exc}") from exc
        self._slots_stale = False
