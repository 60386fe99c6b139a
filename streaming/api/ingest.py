"""Turn a POST /v1/events body into records to produce and per-index rejections (pure)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from enrichment.request_context import CONTEXT_FIELD
from quality.event_contract import EventContractError, check_event_size, validate_event
from streaming.api.delivery import OutgoingRecord
from streaming.dlq import dlq_headers

MAX_BATCH_EVENTS = 500
MAX_BODY_BYTES = 512 * 1024

_encoder = msgspec.json.Encoder()


def _as_is(obj: Any) -> Any:
    return obj


class BadRequestBody(ValueError):
    """The body is not an event or a batch of events (HTTP 400)."""


class BatchTooLarge(ValueError):
    """The batch has more events than allowed (HTTP 413)."""


@dataclass(frozen=True, slots=True)
class Unmappable:
    """An incoming message that could not become an event (e.g. a Segment call); kept for the DLQ."""

    original: Any
    reason: str


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int
    event_id: Any
    error: str


@dataclass
class IngestPlan:
    """What to produce for one request, and what to tell the client."""

    records: list[OutgoingRecord] = field(default_factory=list)
    accepted: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    #: Accepted events tagged as bots, by ``metadata.context.bot_reason``.
    bots: dict[str, int] = field(default_factory=dict)
    #: Accepted events whose ``consent`` refuses a purpose, by purpose.
    consent_refused: dict[str, int] = field(default_factory=dict)


def events_of_body(body: Any) -> list[Any]:
    """The events of a body: one event object, or ``{"events": [...]}``."""
    if not isinstance(body, dict):
        raise BadRequestBody('body must be a JSON object: one event or {"events": [...]}')
    if "events" not in body:
        return [body]
    events = body["events"]
    if not isinstance(events, list):
        raise BadRequestBody('"events" must be an array')
    if len(body) > 1:
        raise BadRequestBody('a batch body has only the "events" field')
    if len(events) > MAX_BATCH_EVENTS:
        raise BatchTooLarge(f"a batch holds at most {MAX_BATCH_EVENTS} events, got {len(events)}")
    return events


def plan_ingest(
    events: list[Any],
    *,
    received_at: str,
    events_topic: str,
    dlq_topic: str,
    source: str = "collector",
    anonymize: Callable[[Any], Any] = _as_is,
    enrich: Callable[[Any], Any] = _as_is,
) -> IngestPlan:
    """Validate each event: valid ones go to the events topic, invalid ones to the DLQ.

    ``enrich`` (streaming/api/request_enrich.py) adds what the request tells, before
    ``anonymize`` (PULSE_IP_ANONYMIZATION, streaming/api/ip_privacy.py) rewrites every object and
    before anything is encoded, so no record of either topic holds what it removed. An event
    that enrichment would push over the size limit goes as it was sent.
    """
    plan = IngestPlan()
    for index, obj in enumerate(events):
        if isinstance(obj, Unmappable):
            plan.rejected.append(Rejection(index, None, obj.reason))
            original = anonymize(obj.original)
            plan.records.append(
                OutgoingRecord(
                    dlq_topic, _encoder.encode(original), None, dlq_headers(obj.reason, source, received_at)
                )
            )
            continue
        sent = obj
        obj = anonymize(enrich(sent))
        event_id = obj.get("event_id") if isinstance(obj, dict) else None
        try:
            event = validate_event(obj)
            value = _encoder.encode({**obj, "received_at": received_at})
            try:
                check_event_size(len(value), received_at)
            except EventContractError:
                if obj is sent:
                    raise
                obj = anonymize(sent)
                event = validate_event(obj)
                value = _encoder.encode({**obj, "received_at": received_at})
                check_event_size(len(value), received_at)
        except EventContractError as exc:
            reason = str(exc)
            plan.rejected.append(Rejection(index, event_id if isinstance(event_id, str) else None, reason))
            plan.records.append(
                OutgoingRecord(
                    dlq_topic, _encoder.encode(obj), None, dlq_headers(reason, source, received_at)
                )
            )
            continue
        plan.accepted += 1
        reason = _bot_reason(event.metadata)
        if reason is not None:
            plan.bots[reason] = plan.bots.get(reason, 0) + 1
        for purpose, granted in event.consent.items():
            if granted is False:
                plan.consent_refused[purpose] = plan.consent_refused.get(purpose, 0) + 1
        plan.records.append(OutgoingRecord(events_topic, value, event.profile_id.encode()))
    return plan


def _bot_reason(metadata: Any) -> str | None:
    context = metadata.get(CONTEXT_FIELD)
    if isinstance(context, dict) and context.get("bot") is True:
        return str(context.get("bot_reason") or "unknown")
    return None
