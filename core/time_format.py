"""The one ISO 8601 form Pulse writes: UTC, millisecond precision, ``Z`` suffix."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso_millis(moment: datetime) -> str:
    """``moment`` (timezone-aware) as ``2024-04-25T14:23:05.123Z``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_iso() -> str:
    """The current time, as ``iso_millis`` writes it."""
    return iso_millis(datetime.now(UTC))


@lru_cache(maxsize=4096)  # decisions of one checkpoint share their times
def iso_from_ms(ms: int | None) -> str | None:
    """Epoch milliseconds to ``iso_millis`` form; None stays None."""
    if ms is None:
        return None
    # Integer arithmetic: float seconds would round some far-future times down a millisecond.
    return iso_millis(_EPOCH + timedelta(milliseconds=ms))
