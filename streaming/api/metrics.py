"""Prometheus metrics of the collector/API."""

from prometheus_client import Counter, Gauge

REQUESTS = Counter("pulse_collector_requests_total", "POST /v1/events requests by status", ["status"])
EVENTS_ACCEPTED = Counter("pulse_collector_events_accepted_total", "Events durably handed to Kafka")
EVENTS_REJECTED = Counter("pulse_collector_events_rejected_total", "Events rejected and sent to the DLQ")
BOT_EVENTS = Counter(
    "pulse_collector_bot_events_total",
    "Accepted events tagged as bots (metadata.context.bot), by reason: user_agent or ip",
    ["reason"],
)
CONSENT_REFUSED_EVENTS = Counter(
    "pulse_collector_consent_refused_events_total",
    "Accepted events whose consent.<purpose> is false, for analytics and personalization",
    ["purpose"],
)
REQUESTS_HELD = Gauge(
    "pulse_collector_requests_held",
    "Requests waiting for the end of an embedded-broker maintenance (PULSE_BROKER_HOLD_WAIT_SECONDS)",
)
IDENTITY_LINKS_REFUSED = Gauge(
    "pulse_identity_links_refused",
    "Links between user ids the per-person limit PULSE_IDENTITY_MAX_IDS refuses now (pulse:identity:refused)",
)
