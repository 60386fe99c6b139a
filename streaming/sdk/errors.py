"""Exceptions of the Pulse SDK, rooted in ``PulseError``.

An invalid event raises ``quality.event_contract.EventContractError`` (a ``ValueError``) instead,
the same error the collector would report.
"""

from __future__ import annotations


class PulseError(Exception):
    """Base class of the SDK's own errors."""


class ClientClosed(PulseError, RuntimeError):
    """An event was sent to a client after ``close()``."""


class SpoolLocked(PulseError, RuntimeError):
    """Another running client uses this spool directory."""
