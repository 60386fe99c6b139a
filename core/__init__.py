"""The floor every other package stands on: settings, Kafka and Redis clients, topics, the
service registry, the archive layout and small helpers. It imports none of ours."""
