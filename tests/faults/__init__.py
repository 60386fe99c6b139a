"""Fault-injection suite (issue 7, item 1): real processes, faults, invariants against acknowledged events."""
