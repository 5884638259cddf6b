"""Follow a pipeline's output topics from outside, as a black box: offsets and decoded records.

``Tail`` keeps one consumer on a topic, so each look costs only what was appended
since the last (re-reading a busy audit topic on every poll does not scale).
Used by the fault-tolerance tests and the failover benchmark.
"""

from __future__ import annotations

from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from schemas.audit import AuditEvent
from tests.integration.pipeline import Pipeline


def end_offsets(pipeline: Pipeline, topic: str) -> list[int]:
    """The end (high-watermark) offset of each partition of ``topic``."""
    consumer = Consumer({**pipeline.client_config, "group.id": "reader"})
    try:
        return [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(pipeline.partitions)
        ]
    finally:
        consumer.close()


def committed_offsets(pipeline: Pipeline, topic: str) -> list[int | None]:
    """The worker group's committed offset of each partition of ``topic`` (None: none)."""
    consumer = Consumer(
        {
            **pipeline.client_config,
            "group.id": pipeline.settings.app_id,
            "enable.auto.commit": False,
        }
    )
    try:
        tps = [TopicPartition(topic, p) for p in range(pipeline.partitions)]
        return [tp.offset if tp.offset >= 0 else None for tp in consumer.committed(tps, 10)]
    finally:
        consumer.close()


def changelog_records(pipeline: Pipeline) -> int:
    """Records held in the worker's table changelogs (Faust names them
    ``<app id>-<table>-changelog``): what a worker without local state restores."""
    consumer = Consumer({**pipeline.client_config, "group.id": "reader"})
    try:
        topics = consumer.list_topics(timeout=10).topics
        total = 0
        for name, meta in topics.items():
            if name.startswith(f"{pipeline.settings.app_id}-") and name.endswith("-changelog"):
                for p in meta.partitions:
                    low, high = consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)
                    total += high - low
        return total
    finally:
        consumer.close()


# Polls of half a second with nothing new before ``Tail.now`` returns what it has.
MAX_IDLE_POLLS = 10


class Tail:
    """Everything written to one of the pipeline's topics, decoded, from the start or
    from the end of the topic when the tail was made."""

    def __init__(self, pipeline: Pipeline, topic: str, *, from_end: bool = False) -> None:
        self.pipeline = pipeline
        self.topic = topic
        self.models: list[Any] = []
        self.read_to = end_offsets(pipeline, topic) if from_end else [0] * pipeline.partitions
        self.consumer = Consumer(
            {**pipeline.client_config, "group.id": "reader", "enable.auto.commit": False}
        )
        self.consumer.assign(
            [
                TopicPartition(topic, p, offset if from_end else OFFSET_BEGINNING)
                for p, offset in enumerate(self.read_to)
            ]
        )

    def now(self) -> list[Any]:
        """Every record so far (reads up to the end offsets as of this call).

        The consumer's position, not the offset of the last record read, says how
        far it got: the audit topic is written in transactions, whose commit
        markers take offsets but are never delivered. A transaction still open
        holds committed-only readers back, so the read stops after a few idle
        polls and returns what it has; callers poll again.
        """
        ends = end_offsets(self.pipeline, self.topic)
        tps = [TopicPartition(self.topic, p) for p in range(self.pipeline.partitions)]
        idle = 0
        while idle < MAX_IDLE_POLLS:
            messages = self.consumer.consume(500, timeout=0.5)
            for msg in messages:
                partition, offset = msg.partition(), msg.offset()
                if msg.error() or partition is None or offset is None:
                    continue
                self.read_to[partition] = offset + 1
                self.models.append(
                    self.pipeline.codec.decode(
                        msg.value(), msg.key(), now=datetime.now(UTC), check_key=False
                    )
                )
            positions = [
                max(tp.offset, read)
                for tp, read in zip(self.consumer.position(tps), self.read_to, strict=True)
            ]
            if all(pos >= end for pos, end in zip(positions, ends, strict=True)):
                break
            idle = 0 if messages else idle + 1
        return self.models

    def close(self) -> None:
        self.consumer.close()

    def __enter__(self) -> Tail:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def decided(audit: Tail) -> set[str]:
    """Ids of the input events some audit entry names: the events decided so far."""
    return {e for a in audit.now() if isinstance(a, AuditEvent) for e in a.event_ids_in}
