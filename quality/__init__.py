"""Schemas and checks shared by the stream and the batch side (the event contract lives here)."""
