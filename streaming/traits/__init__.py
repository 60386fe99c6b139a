"""Computed traits: profile fields declared once (definition), stored as mergeable cells (cells),
changed by each event's ops (ops), loaded from the user's file (loader, follower) and
recomputed in DuckDB (sql). See docs/traits.md."""
