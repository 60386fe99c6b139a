"""Quix sink of the profile app: deltas to Redis, rejects to the DLQ, confirmed before offsets commit."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

import msgspec
import redis
from confluent_kafka import Producer
from quixstreams.sinks import BaseSink, SinkBackpressureError

from core.time_format import now_iso
from streaming.dlq import Origin, dlq_headers
from streaming.profile_app.pipeline import CheckedRecord
from streaming.profile_app.rule_inputs import AnonymousPartCache, rule_inputs
from streaming.profiles.admission import PERSONALIZATION
from streaming.profiles.codec import PartReport
from streaming.profiles.delta import ProfileDelta
from streaming.profiles.keys import forgotten_key
from streaming.profiles.store import RedisProfileStore
from streaming.profiles.suppression import ensure_mirror
from streaming.rules.changes import segment_entered
from streaming.rules.checkpoint import UpdateOrder, decide_checkpoint
from streaming.rules.engine import RuleEngine
from streaming.rules.model import EMPTY_RULESET
from streaming.rules.prefilter import Candidate

logger = logging.getLogger(__name__)

HEARTBEAT_KEY = "pulse:heartbeat:profile-app"
DLQ_SOURCE = "profile-app"
#: Deltas buffered before they are sent to Redis ahead of the checkpoint.
SEND_EVERY = 100


class DeadLetterError(RuntimeError):
    """The broker did not acknowledge dead-letter (or trigger) records; the batch is retried."""


_NO_RULES = RuleEngine(EMPTY_RULESET)
_encode_json = msgspec.json.Encoder().encode


class ProfileSink(BaseSink):
    """Sends deltas to Redis as they accumulate and confirms them all at the checkpoint.

    Quix commits offsets only after ``flush`` returns; ``flush`` returns only after Redis
    has replied to every script call and the broker has acknowledged every dead-letter
    record. Every delta carries its ``event_id`` marker, so a crash at any moment leads to
    a harmless redelivery: nothing is lost or counted twice. Sending before the checkpoint
    lets Redis apply one batch while the app validates the next.

    After the profiles are updated, the rules engine evaluates the checkpoint's triggering
    events on the people's merged profiles; fired decisions are stored in Redis and produced
    to the triggers topic (acknowledged) before the checkpoint completes, and so are the
    segments people entered, to the profile changes topic. Webhooks are the relay's job
    (streaming/relay), which reads them from the triggers topic. With the prefilter
    the update script names, right after each event's update, the rules that may fire on
    it; events whose person changed after that are decided again by a decide call on the
    people as the checkpoint left them, so every event sees the checkpoint's final people.
    """

    def __init__(
        self,
        store: RedisProfileStore,
        dlq_producer: Producer,
        dlq_topic: str,
        *,
        retry_after_seconds: float = 1.0,
        heartbeat_seconds: float = 1.0,
        rules: Callable[[], RuleEngine] = lambda: _NO_RULES,
        triggers_topic: str | None = None,
        changes_topic: str | None = None,
        enrich: Callable[[Any], dict[str, Any]] | None = None,
        prefilter: bool = True,
        anonymous_part_ttl_seconds: float | None = None,
        after_checkpoint: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__()
        self._store = store
        self._writer = store.writer()
        self._dlq = dlq_producer
        self._dlq_topic = dlq_topic
        self._retry_after = retry_after_seconds
        self._heartbeat_seconds = heartbeat_seconds
        self._last_heartbeat = 0.0
        self._pending: list[ProfileDelta] = []
        self._rules = rules
        self._engine = rules()
        self._triggers_topic = triggers_topic
        self._changes_topic = changes_topic
        self._enrich = enrich
        self._prefilter = prefilter
        self._triggering: list[tuple[Any, ProfileDelta]] = []
        self._triggering_types: set[str] = set()  # of the checkpoint's triggering events
        self._triggers_type: dict[str, bool] = {}  # event type -> whether the rules trigger on it
        self._places: list[tuple[int, int]] = []  # of the triggering deltas in self._order
        self._order = UpdateOrder(cluster=store.is_cluster)
        # Profiles with triggering events in this checkpoint: a call updating one reports on it
        # (again), so the rules see it as the checkpoint left it.
        self._watch: set[str] = set()
        self._batch_triggers = False  # whether the deltas not yet sent have a triggering event
        # With the prefilter Python reads few people, so it reads their anonymous parts live;
        # without it, a short cache saves a round trip per checkpoint (parts may be 5 s stale).
        if anonymous_part_ttl_seconds is None:
            anonymous_part_ttl_seconds = 0.0 if prefilter else 5.0
        self._anonymous_parts = AnonymousPartCache(anonymous_part_ttl_seconds)
        self._linked: set[str] = set()  # anonymous ids linked to a user in this checkpoint
        self._dead_letters_in_flight = 0
        self._triggers_in_flight = 0
        self._delivery_errors: list[str] = []
        self._failure: Exception | None = None
        #: Called at the end of each checkpoint's flush with the events it took (the cadence).
        self._after_checkpoint = after_checkpoint
        self._received_at_checkpoint = 0
        self.received = 0
        self.skipped = 0  # valid events kept out of profiles (bots, no consent)
        self.consent_withdrawals = 0  # people forgotten for personalization (consent withdrawn)
        #: profile id -> latest event time of its events in this checkpoint refusing personalization.
        self._withdrawals: dict[str, int] = {}
        self.skipped_forgotten = 0  # events of forgotten people (update.lua), never counted
        self.applied = 0
        self.dead_lettered = 0
        self.decisions_fired = 0
        self.changes_written = 0

    def setup(self) -> None:
        """Called by Quix at start-up: check Redis answers and announce the app is alive."""
        self._beat()

    def add(
        self,
        value: CheckedRecord,
        key: Any,
        timestamp: int,
        headers: Any,
        topic: str,
        partition: int,
        offset: int,
    ) -> None:
        self.received += 1
        delta = value.delta
        if delta is None:
            if value.skipped is not None:
                self.skipped += 1  # archived by the archiver, counted by the collector
                event = value.event
                if event is not None and event.consent.get(PERSONALIZATION) is False:
                    pid = event.profile_id
                    self._withdrawals[pid] = max(self._withdrawals.get(pid, 0), event.timestamp_ms)
                return
            self._send_dead_letter(value, key, Origin(topic, partition, offset))
            return
        pending = self._pending
        if not pending and not self._triggering:
            engine = self._rules()  # a checkpoint's events all see the same rules
            if engine is not self._engine:
                self._engine, self._triggers_type = engine, {}
        pending.append(delta)
        place = self._order.add(delta)
        if delta.anonymous_id:
            self._linked.add(delta.anonymous_id)
        event_type = delta.event_type
        triggers = self._triggers_type.get(event_type)
        if triggers is None:
            triggers = self._triggers_type[event_type] = self._engine.triggers(event_type)
        if triggers and value.event is not None:
            self._triggering.append((value.event, delta))
            self._triggering_types.add(event_type)
            self._places.append(place)
            self._watch.add(delta.profile_id)
            self._batch_triggers = True
        if len(pending) >= SEND_EVERY:
            self._send_pending()

    def flush(self) -> None:
        try:
            self._confirm_deliveries()
            self._send_pending()
            prefiltering = self._prefilter and bool(self._triggering)
            redecided: set[str] = set()
            if prefiltering and self._failure is None:
                # Events whose profile was updated again later: decided again after every update.
                redecided = self._decide_again(None)
            if self._failure is not None:
                raise self._failure
            applied = self._writer.confirm()
            if prefiltering:
                # Events of stitched people, one of whose other parts changed later (rare).
                stitched = self._writer.prefiltered.stitched
                late = self._decide_again(stitched, redecided) if stitched else set()
                if late:
                    self._writer.confirm()
                    redecided |= late
            reports = self._writer.take_reports()
            if (
                not prefiltering
            ):  # a report from before a later link may miss the profile's owner: read it again
                reports = {
                    pid: r for pid, r in reports.items() if not self._order.linked_since_last_update(pid)
                }
            prefiltered, sent_ms = self._writer.take_prefiltered()
            triggering = self._triggering
            candidates = None
            if prefiltering:  # the script's prefilter named the rules that may fire
                candidates = prefiltered.final(redecided)
                triggering = [pair for pair in triggering if pair[1].event_id in candidates]
            if triggering:
                self._decide(triggering, reports, candidates, sent_ms)
            self._forget_withdrawn()
            self._beat()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self._writer.abort()
            logger.warning(
                "Redis unavailable (%s); pausing %ss and retrying the batch", exc, self._retry_after
            )
            raise SinkBackpressureError(retry_after=self._retry_after) from exc
        finally:
            self._reset_checkpoint()
            self._writer.take_prefiltered()
        self.applied += applied
        skipped = self._writer.take_skipped_forgotten()
        if skipped:
            self.skipped_forgotten += skipped
            logger.info("skipped %d events of forgotten people (%d so far)", skipped, self.skipped_forgotten)
        if self._after_checkpoint is not None:
            self._after_checkpoint(self.received - self._received_at_checkpoint)
        self._received_at_checkpoint = self.received

    def _forget_withdrawn(self) -> None:
        """Consent to personalization refused (docs/events.md, "Consent"): forget the person for that
        purpose, as a DELETE would, but the archive keeps the events. Once per withdrawal: an id
        forgotten at or after the event's time already has nothing of before it counted."""
        if not self._withdrawals:
            return
        ids = sorted(self._withdrawals)
        pipe = self._store.client.pipeline(transaction=False)
        for pid in ids:
            pipe.hget(forgotten_key(pid), "at")
        for pid, at in zip(ids, pipe.execute(), strict=True):
            if at is not None and int(at) >= self._withdrawals[pid]:
                continue
            forgotten = self._store.forget_person(pid, purpose=PERSONALIZATION)
            self.consent_withdrawals += 1
            logger.info(
                "%s withdrew consent to personalization: %d ids forgotten for it", pid, len(forgotten.ids)
            )

    def _reset_checkpoint(self) -> None:
        self._pending, self._failure, self._triggering, self._watch = [], None, [], set()
        self._places, self._order = [], UpdateOrder(cluster=self._store.is_cluster)
        self._triggering_types = set()
        self._batch_triggers = False
        self._linked = set()
        self._withdrawals = {}

    def _decide_again(
        self, stitched: Mapping[str, Iterable[str]] | None, skip: Collection[str] = ()
    ) -> set[str]:
        """Queue a decide call for the triggering events whose person changed later: with
        ``stitched`` (event_id -> parts), the events it names, by their parts; else every event,
        by its own profile."""
        order = self._order
        if stitched is None:
            deltas = order.updated_later(self._triggering, self._places)
        else:
            deltas = [
                delta
                for (_, delta), place in zip(self._triggering, self._places, strict=True)
                if delta.event_id in stitched
                and delta.event_id not in skip
                and order.changed_after(stitched[delta.event_id], place)
            ]
        if deltas:  # its reports replace earlier ones: they carry what any event of the checkpoint reads
            with_products = self._wants_products()
            self._writer.decide(deltas, self._engine.prefilter, with_products=with_products)
        return {delta.event_id for delta in deltas}

    def _wants_products(self) -> bool:
        """Whether the rules of the checkpoint's triggering events read last_products (reports then
        include them); kept per event type, not recomputed over every event per batch."""
        if not self._triggering_types:
            return False
        names = self._engine.profile_fields(self._triggering_types)
        return names is None or "last_products" in names

    def _decide(
        self,
        triggering: list[tuple[Any, ProfileDelta]],
        reports: dict[str, PartReport],
        candidates: dict[str, Candidate] | None = None,
        sent_ms: int | None = None,
    ) -> None:
        """Evaluate rules on the updated people; store and publish what fired (acknowledged).

        With ``candidates`` (the script's prefilter) only the rules it names are considered, and
        the people are read only for events with a rule it could not decide. The time is that
        of the checkpoint's first script call, which the script judges fire states at too, so
        both see the same cooldowns.
        """
        undecided = (
            triggering
            if candidates is None
            else [pair for pair in triggering if candidates[pair[1].event_id].uncertain()]
        )
        person_of: dict[str, str] = {}
        documents: dict[str, dict[str, Any] | None] = {}
        states: dict[str, dict[str, dict[str, Any]]] = {}
        self._anonymous_parts.forget(self._linked)  # a new link may change who owns them
        if undecided:
            names = self._engine.profile_fields({delta.event_type for _, delta in undecided})
            missing = {delta.profile_id for _, delta in undecided} - reports.keys()
            if missing:  # e.g. sent before a rule reload started watching them
                reports.update(self._store.read_reports(sorted(missing)))
            person_of, documents, states = rule_inputs(
                self._store, reports, self._anonymous_parts, names, self._store.session_gap_ms
            )
        now_ms = sent_ms if sent_ms is not None else int(time.time() * 1000)
        entered: list[dict[str, Any]] = []
        fired, segments = decide_checkpoint(
            self._engine,
            triggering,
            person_of,
            documents,
            states,
            now_ms,
            self._enrich,
            candidates,
            on_entered=entered.append,
        )
        if not fired:
            return
        encoded = [_encode_json(decision) for decision in fired]
        # Acknowledged before Redis records the fires: a retry fires them again (same ids).
        if self._triggers_topic:
            for decision, value in zip(fired, encoded, strict=True):
                self._produce(self._triggers_topic, value, decision["profile_id"])
        if self._changes_topic:
            for decision in entered:
                self._produce(
                    self._changes_topic, _encode_json(segment_entered(decision)), decision["profile_id"]
                )
            self.changes_written += len(entered)
        self._confirm_deliveries()
        self._store.record_decisions(fired, segments, encoded)
        self.decisions_fired += len(fired)

    def _produce(self, topic: str, value: bytes, key: str) -> None:
        """Produce a trigger or a change; ``_confirm_deliveries`` waits for the broker."""
        self._dlq.produce(topic, value=value, key=key, on_delivery=self._on_delivery)
        self._triggers_in_flight += 1

    def on_paused(self) -> None:
        """Quix paused the partitions and will redeliver: drop what was not confirmed."""
        self._writer.abort()
        self._reset_checkpoint()

    def _send_pending(self) -> None:
        if not self._pending or self._failure is not None:
            return
        try:
            watch = {delta.profile_id for delta in self._pending if delta.profile_id in self._watch}
            with_products = bool(watch) and self._wants_products()
            plan = self._engine.prefilter if self._prefilter and self._batch_triggers else None
            self._writer.send(self._pending, watch, with_products=with_products, plan=plan)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self._failure = exc  # reported at the checkpoint, which then retries
        self._pending, self._batch_triggers = [], False
        self._order.batch_sent()

    def _send_dead_letter(self, record: CheckedRecord, key: Any, origin: Origin) -> None:
        """Produce a reject now; ``_confirm_deliveries`` waits for the broker at the checkpoint."""
        received_at = now_iso()
        self._dlq.produce(
            self._dlq_topic,
            value=record.raw,
            key=key,
            headers=dlq_headers(record.error or "invalid", DLQ_SOURCE, received_at, origin),
            on_delivery=self._on_delivery,
        )
        self._dlq.poll(0)
        self._dead_letters_in_flight += 1

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self._delivery_errors.append(str(err))

    def _confirm_deliveries(self) -> None:
        """Wait until the broker acknowledged every reject and trigger produced so far (at-least-once)."""
        if not self._dead_letters_in_flight and not self._triggers_in_flight:
            return
        remaining = self._dlq.flush(30)
        errors, self._delivery_errors = self._delivery_errors, []
        dead, self._dead_letters_in_flight = self._dead_letters_in_flight, 0
        self._triggers_in_flight = 0
        if remaining or errors:
            raise DeadLetterError(
                f"the broker did not acknowledge {remaining or len(errors)} record(s): {errors[:1]}"
            )
        self.dead_lettered += dead

    def _beat(self) -> None:
        now = time.time()
        if now - self._last_heartbeat >= self._heartbeat_seconds:
            self._store.client.set(HEARTBEAT_KEY, int(now * 1000))
            if self._store.forget_record is not None:  # a cluster's update calls cannot check it themselves
                ensure_mirror(self._store.client, self._store.forget_record)
            self._last_heartbeat = now
