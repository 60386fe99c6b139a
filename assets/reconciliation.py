"""Reconcile live profiles in Redis against a batch recompute from the archive."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from core.redis_client import RedisClient, primaries
from streaming.profiles.keys import KEY_PREFIX, decode_id
from streaming.profiles.store import RedisProfileStore

MAX_EXAMPLES = 10
#: Live profiles read per Redis round trip.
READ_CHUNK = 1_000
#: Not derived from event counts: processing time, the intent model's score and rule-made segments.
IGNORED_FIELDS = ("updated_at", "intent_score", "segments")


@dataclass
class ReconcileReport:
    profiles_checked: int = 0
    mismatched: int = 0
    missing_in_redis: int = 0
    extra_in_redis: int = 0
    matched: int = 0
    in_flight: int = 0  # left out: the stream may be applying their records right now
    people_checked: int = 0  # ids whose person (canonical id) was compared
    people_mismatched: int = 0  # ids whose person differs between Redis and the archive
    mismatched_fields: dict[str, int] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def drifted(self) -> bool:
        return bool(self.mismatched or self.missing_in_redis or self.extra_in_redis or self.people_mismatched)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "drift": self.drifted}


def diff_profiles(
    batch: Mapping[str, Mapping[str, Any]], live: Mapping[str, Mapping[str, Any] | None]
) -> ReconcileReport:
    """Compare per profile and field; ``live`` maps every id seen on either side (None = absent)."""
    report = ReconcileReport()
    fields: Counter[str] = Counter()
    for profile_id in sorted(set(batch) | set(live)):
        expected, actual = batch.get(profile_id), live.get(profile_id)
        report.profiles_checked += 1
        if expected is None:
            report.extra_in_redis += 1
            _example(report, profile_id, "extra_in_redis")
        elif actual is None:
            report.missing_in_redis += 1
            _example(report, profile_id, "missing_in_redis")
        else:
            differing = sorted(
                k
                for k in expected.keys() | actual.keys()
                if k not in IGNORED_FIELDS and expected.get(k) != actual.get(k)
            )
            if differing:
                report.mismatched += 1
                fields.update(differing)
                _example(
                    report,
                    profile_id,
                    "mismatched",
                    {k: {"batch": expected.get(k), "redis": actual.get(k)} for k in differing},
                )
            else:
                report.matched += 1
    report.mismatched_fields = dict(fields.most_common())
    return report


def _example(report: ReconcileReport, profile_id: str, kind: str, fields: dict | None = None) -> None:
    if len(report.examples) < MAX_EXAMPLES:
        report.examples.append(
            {"profile_id": profile_id, "kind": kind, **({"fields": fields} if fields else {})}
        )


def diff_people(
    report: ReconcileReport, batch: Mapping[str, str], live: Mapping[str, str], left_out: Collection[str]
) -> None:
    """Compare each id's person (its canonical id) between the archive and Redis, into ``report``.

    Ids in ``left_out`` (in flight), and ids whose person is, on either side, are not compared.
    """
    for profile_id in sorted(batch):
        expected, actual = batch[profile_id], live.get(profile_id, profile_id)
        if profile_id in left_out or expected in left_out or actual in left_out:
            continue
        report.people_checked += 1
        if expected != actual:
            report.people_mismatched += 1
            _example(report, profile_id, "person", {"person_id": {"batch": expected, "redis": actual}})


def unlinked_pairs(client: RedisClient) -> set[frozenset[str]]:
    """The pairs ``pulse identity unlink`` suppressed (SCAN of every master's ``<id>:unlinked``)."""
    pairs: set[frozenset[str]] = set()
    for node in primaries(client):
        for key in node.scan_iter(match=f"{KEY_PREFIX}:{{*}}:unlinked", count=1000):
            text = key.decode() if isinstance(key, bytes) else key
            pid = decode_id(text[len(KEY_PREFIX) + 2 : -len("}:unlinked")])
            pairs |= {frozenset((pid, other.decode())) for other in node.hkeys(key)}
    return pairs


def live_people(store: RedisProfileStore, ids: Collection[str], chunk: int = READ_CHUNK) -> dict[str, str]:
    """Each id's person (canonical id) in Redis, ``chunk`` ids per resolution."""
    ordered = list(ids)
    people: dict[str, str] = {}
    for start in range(0, len(ordered), chunk):
        people.update(store.resolve_people(ordered[start : start + chunk]))
    return people


def live_profile_ids(client: RedisClient) -> Iterator[str]:
    """Ids of every profile in Redis: SCAN (which never blocks a server) on every master of a cluster."""
    for node in primaries(client):
        for key in node.scan_iter(match=f"{KEY_PREFIX}:{{*}}:p", count=1000):
            text = key.decode() if isinstance(key, bytes) else key
            yield decode_id(text[len(KEY_PREFIX) + 2 : -3])


def live_documents(
    store: RedisProfileStore,
    ids: Collection[str],
    progress: Callable[[int, int], None] | None = None,
    chunk: int = READ_CHUNK,
    now_ms: int | None = None,
) -> dict[str, dict[str, Any] | None]:
    """Each id's live profile part without ``updated_at`` (None = absent), ``chunk`` ids per round trip.

    ``progress(done, total)`` is called after every round trip; trait fields are read at ``now_ms``.
    """
    ordered = list(ids)
    documents: dict[str, dict[str, Any] | None] = {}
    for start in range(0, len(ordered), chunk):
        for profile_id, document in store.get_profiles(ordered[start : start + chunk], now_ms).items():
            if document is not None:
                document.pop("updated_at", None)
            documents[profile_id] = document
        if progress is not None:
            progress(len(documents), len(ordered))
    return documents
