"""Fixtures shared by integration test modules."""

from collections.abc import Iterator

import pytest
from confluent_kafka import Producer


@pytest.fixture(scope="module")
def dlq_producer(broker: str) -> Iterator[Producer]:
    """A profile sink's producer for rejects (the sink tests send valid events, so it sends nothing)."""
    producer = Producer({"bootstrap.servers": broker})
    yield producer
    producer.flush(5)
