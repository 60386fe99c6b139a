"""Redis clients from ``PULSE_REDIS_URL`` (I/O): one server, or a Redis Cluster.

A ``redis+cluster://`` (or ``rediss+cluster://`` for TLS) URL gives a ``redis.RedisCluster``;
it may name several seed nodes, ``redis+cluster://user:pass@h1:6379,h2:6379/0``. Any other URL
gives a plain ``redis.Redis``. The scheme, not a probe of the server, decides, so a client is
built without a round trip and the one setting says what Pulse talks to.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import redis
from redis.cluster import ClusterNode

RedisClient: TypeAlias = redis.Redis | redis.RedisCluster

#: Cluster URL scheme -> the redis-py scheme of one of its nodes.
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def is_cluster_url(url: str) -> bool:
    """True when the URL names a Redis Cluster (``redis+cluster://`` or ``rediss+cluster://``)."""
    return url.partition("://")[0].lower() in CLUSTER_SCHEMES


def redis_from_url(url: str, **options: Any) -> RedisClient:
    """A client for the URL: ``redis.RedisCluster`` for a cluster URL, else ``redis.Redis``.

    ``options`` go to redis-py (``socket_timeout``...). A plain client connects on first use;
    a cluster client reads the slot map from the first seed that answers, so it raises
    ``redis.ConnectionError`` at once when none does.
    """
    scheme, _, rest = url.partition("://")
    node_scheme = CLUSTER_SCHEMES.get(scheme.lower())
    if node_scheme is None:
        return redis.Redis.from_url(url, **options)
    netloc, slash, path = rest.partition("/")
    credentials, at, hosts = netloc.rpartition("@")
    first, *others = hosts.split(",")
    seeds = [ClusterNode(*_host_port(seed)) for seed in others]
    try:
        return redis.RedisCluster.from_url(
            f"{node_scheme}://{credentials}{at}{first}{slash}{path}", startup_nodes=seeds or None, **options
        )
    except redis.exceptions.RedisClusterException as exc:  # not a RedisError: callers catch those
        raise redis.exceptions.ConnectionError(f"no Redis Cluster seed of {hosts} answers: {exc}") from exc


def is_cluster(client: RedisClient) -> bool:
    return isinstance(client, redis.RedisCluster)


def primaries(client: RedisClient) -> list[redis.Redis]:
    """One plain client per master (the client itself when it is not a cluster): for SCAN and INFO."""
    if isinstance(client, redis.RedisCluster):
        return [client.get_redis_connection(node) for node in client.get_primaries()]
    return [client]


def _host_port(seed: str) -> tuple[str, int]:
    host, colon, port = seed.rpartition(":")
    if not colon or host.endswith(":"):  # no port (a bare IPv6 address has colons but no brackets)
        host, port = seed, "6379"
    if not host or not port.isdigit():
        raise ValueError(
            f"bad Redis Cluster seed {seed!r}: write host:port, e.g. redis+cluster://h1:6379,h2:6379"
        )
    return host.strip("[]"), int(port)
