"""`pulse rebuild`: recompute chosen people, or everyone, from the archive while the stream runs, exactly.

Per profile part, in this order:
1. wipe: its state keys and every ``event_id`` marker, in one script call between the stream's
   updates (streaming/profiles/rebuild_wipe.py), and at once re-apply the part's events the
   archive held before (read first, once the archiver had caught up): the part is nearly whole
   again within milliseconds;
2. wait until the archiver has archived the events topic up to its end as of after the wipes:
   every event the stream applied before a wipe is then in the archive;
3. re-apply the records archived since the first read.
Every re-application goes through the stream's own update function (``apply_deltas``, deltas
made by the profile app's ``check_record``). An event the stream applied after the wipe has a
fresh marker and is not counted again; one it applied before has lost its marker and counts once
more, into the emptied part. So afterwards every rebuilt part equals the batch recompute of its
archived events.

Rule state is kept: decisions and fire states stay as they are, nothing fires during a rebuild,
and ``segments`` (and trait-backfill marks) are put back once the part has its events again.
Events forgotten by the forget rule (core/forgetting.py: at or before their id's forget time)
are left out, as the stream's update function leaves them out; a forgotten person's later
events are rebuilt like any other.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from assets.archive_parts import archive_identity, archived_profile_ids, read_part_events
from assets.forgotten import read_suppressions
from assets.identity_unlinks import reapply_unlinks
from assets.kafka_health import end_offsets, wait_for_archiver
from assets.reconciliation import live_profile_ids
from core import service_registry
from core.forgetting import Suppressions, is_forgotten
from core.redis_client import RedisClient, redis_from_url
from core.service_registry import ServiceNotConfigured
from core.settings import PulseSettings
from enrichment.reference_store import load_catalog
from streaming.profile_app.pipeline import check_record
from streaming.profiles.admission import Admission
from streaming.profiles.codec import decode
from streaming.profiles.delta import ProfileDelta
from streaming.profiles.document import now
from streaming.profiles.intent_store import IntentModelFollower
from streaming.profiles.keys import profile_keys
from streaming.profiles.rebuild_plan import people_of, people_parts
from streaming.profiles.rebuild_wipe import PartWiper
from streaming.profiles.store import RedisProfileStore
from streaming.traits.follower import traits_follower
from streaming.traits.registration import RegisteredTraits

logger = logging.getLogger(__name__)

#: Deltas per ``apply_deltas`` call.
APPLY_CHUNK = 2000

#: progress(stage, done, total): stages "wiping", "archiving", "reading the archive", "re-applying".
Progress = Callable[[str, int, int], None]


class NothingToRebuild(ValueError):
    """Neither ids nor ``all`` were given."""


@dataclass
class RebuildReport:
    people: list[str] = field(default_factory=list)  # the people asked for (empty with --all)
    parts: int = 0  # profile ids wiped and rebuilt (a person's user id and linked anonymous ids)
    markers_deleted: int = 0
    events_read: int = 0  # archived records read, each (part, event_id) once per pass
    events_applied: int = 0  # counted into the emptied parts
    already_applied: int = 0  # counted already (by the stream after the wipe, or an earlier copy): skipped
    events_skipped: int = 0  # kept out of profiles, as the stream does (bots, no consent, a changed contract)
    events_forgotten: int = 0  # distinct (part, event_id) at or before the id's forget time: left out
    parts_empty: int = 0  # parts with no archived event: left absent
    wipes_retried: int = 0
    #: Parts some of whose archived events were left out as forgotten.
    forgotten_parts: list[str] = field(default_factory=list)
    #: The part ids rebuilt (left out of ``as_dict``: every profile with --all).
    part_ids: list[str] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, object]:
        body = asdict(self)
        body.pop("part_ids")
        return body


def rebuild_profiles(
    settings: PulseSettings,
    ids: Sequence[str] = (),
    *,
    all_profiles: bool = False,
    progress: Progress | None = None,
) -> RebuildReport:
    """Rebuild the people of ``ids`` (every part of each), or every profile, from the archive.

    Raises ``ArchiverBehind``/``BrokerUnavailable`` before anything is wiped when the archiver is
    not keeping up; should it happen after the wipes, running the same rebuild again finishes it.
    """
    if not ids and not all_profiles:
        raise NothingToRebuild("name the people to rebuild (user or anonymous ids), or --all")
    client = redis_from_url(service_registry.redis_url(settings))
    brokers = _brokers(settings)
    cut = _archived_cut(settings, brokers)  # fails here, before any wipe, when the archiver is down
    store = _store(settings, client)
    # Unlinked pairs stay apart even in a Redis that lost them (their log lives beside the archive).
    reapply_unlinks(store, settings.archive_path)
    report = RebuildReport()
    if all_profiles:
        parts = sorted(set(archived_profile_ids(settings)) | set(live_profile_ids(client)))
    else:
        report.people, parts = _parts_of(settings, store, ids)
    report.parts, report.part_ids = len(parts), parts
    logger.info("rebuilding %d profile parts from the archive", len(parts))
    chosen = None if all_profiles else parts
    reapply = _Reapplication(settings, store, set(parts), report, read_suppressions(settings, client))

    # First pass: each part gets the events archived so far right after its wipe, so readers and
    # rules see it nearly whole within milliseconds, not after the archiver wait below.
    _stage(progress, "reading the archive", 0, 1)
    early = reapply.deltas_by_part(read_part_events(settings, chosen))
    wiper = PartWiper(client)
    wiped = wiper.wipe(
        parts,
        None if progress is None else lambda done, total: progress("wiping", done, total),
        on_wiped=lambda wiped_ids: reapply.apply([d for pid in wiped_ids for d in early.pop(pid, [])]),
    )
    report.markers_deleted, report.wipes_retried = wiped.markers_deleted, wiped.retried
    if brokers:
        _stage(progress, "archiving", 0, 1)
        wait_for_archiver(settings, brokers)  # the topic's end now, after every wipe
        _stage(progress, "archiving", 1, 1)

    # Second pass: what reached the archive since the first read. Everything the stream applied
    # before a wipe is archived now; what it applied after has a fresh marker and is a duplicate.
    _stage(progress, "reading the archive", 0, 1)
    # A forget meanwhile counts too (the update function also refuses the events it forgot).
    reapply.suppressions = read_suppressions(settings, client)
    late = read_part_events(settings, chosen, from_cut=cut)
    deltas = [d for part_deltas in reapply.deltas_by_part(late).values() for d in part_deltas]
    for start in range(0, len(deltas), APPLY_CHUNK):
        reapply.apply(deltas[start : start + APPLY_CHUNK])
        _stage(progress, "re-applying", start + APPLY_CHUNK, len(deltas))
    wiper.restore(parts)
    report.parts_empty = len(set(parts) - reapply.with_events)
    report.forgotten_parts = sorted(reapply.forgotten_parts)
    report.events_forgotten = len(reapply.forgotten_events)
    logger.info("rebuilt: %s", report.as_dict())
    return report


def _stage(progress: Progress | None, stage: str, done: int, total: int) -> None:
    if progress is not None:
        progress(stage, min(done, total), total)


def _archived_cut(settings: PulseSettings, brokers: str | None) -> dict[int, int] | None:
    """The topic's end offsets now, once the archiver has archived up to them (None: no broker)."""
    if not brokers:
        return None
    cut = end_offsets(settings, brokers, settings.topic_events, 10.0)
    wait_for_archiver(settings, brokers, cut)
    return cut


class _Reapplication:
    """Archived records made into deltas as the profile app makes them, and applied through its store."""

    def __init__(
        self,
        settings: PulseSettings,
        store: RedisProfileStore,
        parts: set[str],
        report: RebuildReport,
        suppressions: Suppressions,
    ) -> None:
        self._store = store
        self._admission = Admission.from_settings(settings)
        self.suppressions = suppressions
        self.forgotten_parts: set[str] = set()
        self.forgotten_events: set[tuple[str, str]] = set()  # (part, event_id), over both passes
        self._catalog = load_catalog(store.client)
        self._traits = store.traits()
        self._now_ms = now()
        self.parts = parts
        self.report = report
        self.with_events: set[str] = set()

    def deltas_by_part(self, records: list[bytes]) -> dict[str, list[ProfileDelta]]:
        """part id -> the deltas of its records (records of other ids, and forgotten events, dropped)."""
        self.report.events_read += len(records)
        by_part: dict[str, list[ProfileDelta]] = {}
        for raw in records:
            checked = check_record(raw, self._catalog, self._traits, self._now_ms, admission=self._admission)
            delta = checked.delta
            if delta is None:
                self.report.events_skipped += 1
            elif delta.profile_id not in self.parts:
                continue
            elif is_forgotten(delta.profile_id, delta.timestamp_ms, self.suppressions):
                self.forgotten_events.add((delta.profile_id, delta.event_id))
                self.forgotten_parts.add(delta.profile_id)
            else:
                by_part.setdefault(checked.delta.profile_id, []).append(checked.delta)
        return by_part

    def apply(self, deltas: list[ProfileDelta]) -> None:
        """Apply through the stream's update function: an event already counted is skipped."""
        for start in range(0, len(deltas), APPLY_CHUNK):
            chunk = deltas[start : start + APPLY_CHUNK]
            applied = self._store.apply_deltas(chunk)
            self.report.events_applied += applied
            self.report.already_applied += len(chunk) - applied
            self.with_events.update(d.profile_id for d in chunk)


def _store(settings: PulseSettings, client: RedisClient) -> RedisProfileStore:
    """A store like the profile app's: its traits (registered: a generation of their own) and intent model."""
    follower = traits_follower(settings)
    follower.prime()
    traits = RegisteredTraits(client, follower).current()
    intent = IntentModelFollower(client, settings.catalog_refresh_seconds)
    intent.prime()
    return RedisProfileStore(
        client,
        dedupe_window_seconds=settings.dedupe_window_seconds,
        session_gap_ms=settings.session_timeout_seconds * 1000,
        intent_model=intent.current,
        traits=lambda: traits,
    )


def _brokers(settings: PulseSettings) -> str | None:
    try:
        return service_registry.kafka_brokers(settings)
    except ServiceNotConfigured:
        logger.warning("no broker configured: rebuilding without waiting for the archiver (stream stopped?)")
        return None


def _parts_of(
    settings: PulseSettings, store: RedisProfileStore, ids: Sequence[str]
) -> tuple[list[str], list[str]]:
    """(people, their parts) for the ids asked for."""
    wanted = list(dict.fromkeys(ids))
    users, links = archive_identity(settings, wanted)
    person_of = people_of(wanted, store.resolve_people(wanted), users, links)
    people = list(dict.fromkeys(person_of.values()))
    _, person_links = archive_identity(settings, people)
    pipe = store.client.pipeline(transaction=False)
    for person in people:
        pipe.smembers(profile_keys(person).anonymous_ids)
    live_linked = {p: {decode(a) for a in members} for p, members in zip(people, pipe.execute(), strict=True)}
    parts = people_parts(people, person_links, live_linked)
    ordered = [pid for person in people for pid in parts[person]]
    return people, list(dict.fromkeys(ordered))
