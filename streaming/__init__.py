"""Apps that touch Kafka and Redis: the collector/API, the profile app and their Redis store."""
