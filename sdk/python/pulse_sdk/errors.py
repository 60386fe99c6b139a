"""Exceptions of the Pulse SDK, all rooted in ``PulseError``."""

from __future__ import annotations


class PulseError(Exception):
    """Base class of the SDK's errors."""


class EventContractError(PulseError, ValueError):
    """An event does not satisfy the event contract; the message is the one the collector gives."""


class ClientClosed(PulseError, RuntimeError):
    """An event was sent to a client after ``close()``."""


class SpoolLocked(PulseError, RuntimeError):
    """Another running client uses this spool directory."""
