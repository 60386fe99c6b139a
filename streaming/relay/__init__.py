"""The webhook relay: delivers webhook decisions from pulse.triggers, signed, at least once."""
