"""The floor every other package stands on: settings, Kafka and Redis clients, topics, the service registry, archive layout and small helpers. Imports none of ours."""
