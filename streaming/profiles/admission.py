"""Which valid events go into profiles and rules (pure), written once for every engine.

A valid event stays out of profiles and rules, though it is archived and counted, when

- the collector tagged it as a bot's (``metadata.context.bot``), unless ``PULSE_BOTS_IN_PROFILES``;
- it lacks consent to personalization: ``consent.personalization`` is false, or, with
  ``PULSE_PERSONALIZATION_CONSENT=opt_in``, not true.

The stream (``streaming.profile_app.pipeline``), the Python reference and the rules backtest call
``Admission.refusal``; the DuckDB recompute uses ``Admission.sql`` over the archive's
``is_bot`` and ``consent_personalization`` columns. Both judge each record before deduplication,
as the stream does.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Literal, NamedTuple

from enrichment.request_context import is_bot_event
from quality.event_contract import Event

ConsentMode = Literal["opt_out", "opt_in"]
PERSONALIZATION = "personalization"


class Admission(NamedTuple):
    """The profile admission policy (``from_settings`` reads it from the settings)."""

    keep_bots: bool = False
    consent: ConsentMode = "opt_out"

    @classmethod
    def from_settings(cls, settings: object) -> Admission:
        """The policy of ``PULSE_BOTS_IN_PROFILES`` and ``PULSE_PERSONALIZATION_CONSENT``."""
        return cls(
            keep_bots=bool(getattr(settings, "bots_in_profiles", False)),
            consent=getattr(settings, "personalization_consent", "opt_out"),
        )

    def refusal(self, event: Event) -> str | None:
        """Why ``event`` stays out of profiles (``"bot"``, ``"no_consent"``), or None to count it."""
        if not self.keep_bots and is_bot_event(event.metadata):
            return "bot"
        if not consents_to_personalization(event, self.consent):
            return "no_consent"
        return None

    def sql(self, columns: Collection[str]) -> str:
        """The same rule as a conjunction over archive rows (``AND ...``; empty when none applies).

        ``columns`` are the archive's columns: files of older releases lack the newer ones, and a
        missing column reads as null.
        """
        terms = []
        if not self.keep_bots and "is_bot" in columns:
            terms.append("NOT coalesce(is_bot, false)")
        granted_when_unsaid = "true" if self.consent == "opt_out" else "false"
        if "consent_personalization" in columns:
            terms.append(f"coalesce(consent_personalization, {granted_when_unsaid})")
        elif self.consent == "opt_in":
            terms.append("false")
        return "".join(f" AND {term}" for term in terms)


def consents_to_personalization(event: Event, mode: ConsentMode) -> bool:
    """Whether the event may be profiled: its ``consent.personalization``, else the mode's default."""
    granted = event.consent.get(PERSONALIZATION)
    if granted is None:
        return mode == "opt_out"
    return granted
