"""Dagster assets over the archive: batch profiles, reconciliation, models."""
