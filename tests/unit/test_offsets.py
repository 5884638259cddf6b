"""The catch-up's offset lookup: the consumer's answers, its timeout, its failures."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from agents.runtime.offsets import OffsetLookup


class FakeConsumer:
    def __init__(self, bounds: dict[tuple[str, int], tuple[int, int] | None]) -> None:
        self.bounds = bounds
        self.timeouts: list[float] = []
        self.metadata_refreshes = 0
        self.failing: set[tuple[str, int]] = set()

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float
    ) -> tuple[int, int] | None:
        self.timeouts.append(timeout)
        where = (partition.topic, partition.partition)
        if where in self.failing:
            raise KafkaException(KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION))
        return self.bounds[where]

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        self.metadata_refreshes += 1
        return None


def test_bounds_are_the_end_and_start_offsets_of_each_partition() -> None:
    consumer = FakeConsumer({("in", 2): (5, 90), ("acks", 2): (0, 7)})
    ends, starts = OffsetLookup(consumer, timeout_s=3.0).bounds([("in", 2), ("acks", 2)])
    assert ends == {("in", 2): 90, ("acks", 2): 7}
    assert starts == {("in", 2): 5, ("acks", 2): 0}
    # Bounded: a leader that is away fails the lookup in seconds, not the request timeout.
    assert consumer.timeouts == [3.0, 3.0]
    assert consumer.metadata_refreshes == 0


@pytest.mark.parametrize(
    ("failing", "bounds", "error"),
    [
        ({("in", 2)}, (5, 90), KafkaException),  # a leader moved
        (set(), None, TimeoutError),  # no answer within the timeout
    ],
)
def test_a_partition_that_cannot_be_read_fails_the_lookup_and_refreshes_metadata(
    failing: set[tuple[str, int]], bounds: tuple[int, int] | None, error: type[Exception]
) -> None:
    consumer = FakeConsumer({("acks", 2): (0, 7), ("in", 2): bounds})
    consumer.failing = failing
    with pytest.raises(error):
        OffsetLookup(consumer).bounds([("acks", 2), ("in", 2)])
    assert consumer.metadata_refreshes == 1
