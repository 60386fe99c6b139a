"""Export the event contract of ``quality.event_contract`` as JSON Schema (draft 2020-12)."""

from __future__ import annotations

from typing import Any

from quality.event_contract import (
    COMMON_METADATA_RULES,
    CONSENT_PURPOSE_PATTERN,
    CUSTOM_EVENT_TYPE_PATTERN,
    MAX_CONSENT_PURPOSES,
    MAX_ID_LENGTH,
    METADATA_RULES,
    SCHEMA_VERSION,
    STANDARD_EVENT_TYPES,
    MetadataRule,
)


def _rule_schema(rule: MetadataRule) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": rule.kind}
    if rule.kind == "string":
        schema.update(minLength=1, maxLength=MAX_ID_LENGTH)
    if rule.minimum is not None:
        schema["minimum"] = rule.minimum
    if rule.maximum is not None:
        schema["maximum"] = rule.maximum
    return schema


def event_json_schema() -> dict[str, Any]:
    """Return the JSON Schema of one event, including the per-type metadata rules."""
    id_schema = {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH}
    per_type = [
        {
            "if": {"properties": {"event_type": {"const": event_type}}},
            "then": {
                "properties": {
                    "metadata": {
                        "type": "object",
                        "required": [r.field for r in rules if r.required],
                        "properties": {r.field: _rule_schema(r) for r in rules},
                    }
                },
                **({"required": ["metadata"]} if any(r.required for r in rules) else {}),
            },
        }
        for event_type, rules in METADATA_RULES.items()
    ]
    identify = {
        "if": {"properties": {"event_type": {"const": "identify"}}},
        "then": {"required": ["user_id"]},
        "else": {"anyOf": [{"required": ["user_id"]}, {"required": ["anonymous_id"]}]},
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://pulse.dev/schemas/event/v{SCHEMA_VERSION}.json",
        "title": "Pulse event",
        "type": "object",
        "additionalProperties": False,
        "required": ["event_id", "event_type", "timestamp"],
        "properties": {
            "event_id": {"type": "string", "format": "uuid"},
            "event_type": {
                "anyOf": [
                    {"enum": list(STANDARD_EVENT_TYPES)},
                    {"type": "string", "pattern": CUSTOM_EVENT_TYPE_PATTERN},
                ]
            },
            "user_id": id_schema,
            "anonymous_id": id_schema,
            "timestamp": {"type": "string", "format": "date-time"},
            "received_at": {"type": "string", "format": "date-time"},
            "metadata": {
                "type": "object",
                "properties": {r.field: _rule_schema(r) for r in COMMON_METADATA_RULES},
            },
            "consent": {
                "type": "object",
                "maxProperties": MAX_CONSENT_PURPOSES,
                "propertyNames": {"pattern": CONSENT_PURPOSE_PATTERN},
                "additionalProperties": {"type": "boolean"},
            },
        },
        "allOf": [identify, *per_type],
    }
