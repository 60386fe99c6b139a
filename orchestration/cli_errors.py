"""How `pulse` commands fail: one exception and one message for an unreachable Redis, for every command."""

from __future__ import annotations

import click


class CommandFailed(click.ClickException):
    """The command could not do its work (an unreachable service, say): exit status 2, not 1."""

    exit_code = 2


def redis_unreachable(exc: Exception) -> str:
    """What to tell the user when Redis does not answer."""
    return (
        f"cannot reach Redis ({exc}); is `pulse up` running, or PULSE_REDIS_URL set? (`pulse doctor` checks)"
    )
