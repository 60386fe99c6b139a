"""Settings, local services, topics, the `pulse` CLI and the Dagster Definitions."""
