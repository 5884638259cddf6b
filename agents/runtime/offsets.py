"""Start and end offsets of partitions, for the timer's catch-up (agents.runtime.catchup).

Read with a consumer of their own (never subscribed, never committing), on a
worker thread, each lookup bounded by a short timeout: never through Faust's
consumer. Faust runs every consumer call (fetches, commits, group rejoins)
through two workers of its consumer thread's method queue, and an offset lookup
there waits out the broker request timeout (90 s) when a partition's leader is
down: a chaos run showed a worker whose fetching and rebalancing stalled that
long lose its partitions while its timer still fired deletions from its stale
state. (The admin client's ``list_offsets`` was tried first: after a broker
restart it kept failing with "not leader" instead of finding the new leader.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any, Protocol, cast

from confluent_kafka import TopicPartition

from streams.logs import Pollable, serve_kafka_logs

Where = tuple[str, int]
LOOKUP_TIMEOUT_S = 5.0


class Watermarks(Protocol):
    """What ``OffsetLookup`` needs of confluent-kafka's ``Consumer``."""

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float
    ) -> tuple[int, int] | None: ...

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any: ...


class OffsetLookup:
    def __init__(self, client: Watermarks, timeout_s: float = LOOKUP_TIMEOUT_S) -> None:
        self.client = client
        self.timeout_s = timeout_s
        if callable(getattr(client, "poll", None)):
            # Never polled here (never subscribed): its log lines (streams.logs)
            # would queue up for as long as a broker is away.
            serve_kafka_logs(cast(Pollable, client))

    def bounds(self, partitions: Iterable[Where]) -> tuple[dict[Where, int], dict[Where, int]]:
        """(end offsets, start offsets) of ``partitions``. Blocking (run it on a
        thread); raises when a lookup fails or times out."""
        ends: dict[Where, int] = {}
        starts: dict[Where, int] = {}
        try:
            for topic, partition in partitions:
                found = self.client.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=self.timeout_s
                )
                if found is None:
                    raise TimeoutError(f"offsets of {topic}[{partition}]")
                starts[(topic, partition)], ends[(topic, partition)] = found
        except Exception:
            # A leader may have moved (a broker restarted): fresh metadata for the
            # next try.
            with contextlib.suppress(Exception):
                self.client.list_topics(timeout=self.timeout_s)
            raise
        return ends, starts
