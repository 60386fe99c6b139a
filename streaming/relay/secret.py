"""The relay's signing secret from the settings, or an actionable start-up error."""

from __future__ import annotations

import logging

from core.settings import DEV_WEBHOOK_SECRET, PulseSettings

logger = logging.getLogger(__name__)


class MissingWebhookSecretError(RuntimeError):
    """The relay cannot sign webhooks: PULSE_WEBHOOK_SECRET is unset outside dev mode."""


def signing_secret(settings: PulseSettings) -> str:
    """PULSE_WEBHOOK_SECRET; in dev mode without one, the well-known dev secret (with a warning)."""
    if settings.webhook_secret is not None and settings.webhook_secret.get_secret_value():
        return settings.webhook_secret.get_secret_value()
    if settings.dev_mode:
        logger.warning(
            "PULSE_WEBHOOK_SECRET is unset: signing webhooks with %r (dev mode)", DEV_WEBHOOK_SECRET
        )
        return DEV_WEBHOOK_SECRET
    raise MissingWebhookSecretError(
        "PULSE_WEBHOOK_SECRET is not set: the relay signs every webhook with it. Set it to a long random "
        "value (e.g. `openssl rand -hex 32`) and give the same value to your webhook receivers."
    )
