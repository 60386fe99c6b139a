"""How the relay retries a webhook (pure): attempts, per-attempt timeout, exponential backoff."""

from __future__ import annotations

from dataclasses import dataclass

from core.http_retry import backoff_delay
from core.settings import PulseSettings


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts per decision, the timeout of each, and the backoff between them (seconds)."""

    attempts: int = 6
    timeout: float = 5.0
    first_delay: float = 0.5
    max_delay: float = 30.0

    @classmethod
    def from_settings(cls, settings: PulseSettings) -> RetryPolicy:
        return cls(
            attempts=settings.webhook_attempts,
            timeout=settings.webhook_timeout_seconds,
            first_delay=settings.webhook_backoff_seconds,
            max_delay=settings.webhook_backoff_max_seconds,
        )

    def delay_after(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based); Retry-After honoured up to the cap."""
        return backoff_delay(attempt - 1, self.first_delay, self.max_delay, retry_after)

    def schedule(self) -> list[float]:
        """The waits between attempts when no answer carries a Retry-After."""
        return [self.delay_after(attempt) for attempt in range(1, self.attempts)]

    def worst_case_seconds(self) -> float:
        """The longest one decision can take: every attempt timing out, every wait at the cap.

        An attempt's timeout applies to each phase (connect, write, read) apart, hence 3x.
        """
        return self.attempts * 3 * self.timeout + (self.attempts - 1) * self.max_delay


def max_poll_interval_ms(policy: RetryPolicy, max_in_flight: int, concurrency: int) -> int:
    """A consumer ``max.poll.interval.ms`` that outlasts a checkpoint whose every webhook fails slowly.

    A checkpoint of ``max_in_flight`` decisions on ``concurrency`` threads takes at most this many
    rounds of the worst case; a minute of margin, and never below librdkafka's default of 5 minutes.
    """
    rounds = -(-max_in_flight // concurrency)
    return max(300_000, int((rounds * policy.worst_case_seconds() + 60) * 1000))
