"""Wiring: the `pulse` CLI, embedded local services, and the Dagster Definitions, jobs,
schedules and sensors."""
