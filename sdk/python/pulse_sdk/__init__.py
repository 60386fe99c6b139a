"""Python SDK for sending server-side events to the Pulse collector (see docs/sdk.md).

from pulse_sdk import PulseClient

with PulseClient("http://127.0.0.1:8080", "dev-write-key") as pulse:
    pulse.track("add_to_cart", user_id="u-42", metadata={"product_id": "p1", "quantity": 1})
"""

from pulse_sdk._version import __version__
from pulse_sdk.client import DeliveryStats, PulseClient
from pulse_sdk.errors import ClientClosed, EventContractError, PulseError, SpoolLocked

__all__ = [
    "ClientClosed",
    "DeliveryStats",
    "EventContractError",
    "PulseClient",
    "PulseError",
    "SpoolLocked",
    "__version__",
]
