"""The projection process: reads the pipeline's topics into the read model.

Partitions are assigned by hand (no consumer group): where to start is the
next offset stored with the data (``offsets``), or the beginning. Messages are
applied in batches, each in one transaction with its offsets, so a restarted
projector goes on where the last committed batch ended, and any overlap is
skipped by the store.

``catch_up`` reads up to the end offsets of the moment it starts and returns
(the CLI does this before answering); ``run`` reads until stopped, looks for
new command topics every ``REDISCOVER_S`` and purges rows past their topic's
retention every ``PURGE_S``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from desk.readmodel.store import Message, Store
from desk.readmodel.topics import DeskTopics, MissingTopics

log = logging.getLogger(__name__)

BATCH_MAX = 2000
POLL_S = 0.5
REDISCOVER_S = 30.0
WAIT_FOR_TOPICS_S = 2.0
PURGE_S = 3600.0


class Projector:
    def __init__(
        self,
        store: Store,
        consumer_config: dict[str, str],
        topics: DeskTopics,
        *,
        batch_max: int = BATCH_MAX,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.store = store
        self.topics = topics
        self.batch_max = batch_max
        self.on_batch = on_batch
        self.consumer = Consumer(
            {
                **consumer_config,
                "group.id": f"{topics.prefix}.privacy-desk",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                # Audit, commands and responses are written in transactions: what a
                # fenced worker sent and the broker aborted is never shown.
                "isolation.level": "read_committed",
            }
        )
        self.assigned: list[TopicPartition] = []

    def close(self) -> None:
        self.consumer.close()

    def assign(self, timeout: float = 10.0) -> list[TopicPartition]:
        """(Re)assign every partition of the topics to read, from the stored offsets.

        Raises ``topics.MissingTopics`` (with what to check) when a topic is absent."""
        partitions = self._partitions(timeout)
        self.consumer.assign(partitions)
        self.assigned = partitions
        return partitions

    def _partitions(self, timeout: float) -> list[TopicPartition]:
        metadata = self.consumer.list_topics(timeout=timeout)
        names = self.topics.select(metadata.topics)
        stored = self.store.next_offsets()
        return [
            TopicPartition(name, p, stored.get((name, p), OFFSET_BEGINNING))
            for name in names
            for p in sorted(metadata.topics[name].partitions)
        ]

    def step(self, timeout: float = POLL_S) -> int:
        """Consume one batch and apply it; the number of messages applied."""
        raw = self.consumer.consume(self.batch_max, timeout)
        batch = []
        for m in raw:
            error = m.error()
            if error is not None:
                if error.fatal():
                    raise KafkaException(error)
                continue
            topic, partition, offset = m.topic(), m.partition(), m.offset()
            if topic is None or partition is None or offset is None:
                continue
            batch.append(Message(topic, partition, offset, m.key(), m.value()))
        if not batch:
            return 0
        result = self.store.apply(batch)
        if self.on_batch is not None:
            self.on_batch(result.applied)
        return result.applied

    def catch_up(self, timeout: float = 300.0) -> int:
        """Read every assigned partition up to its end offset as of now."""
        # The end offsets are read before the partitions are assigned: once they
        # are, each lookup waits behind the consumer's long-polling fetches (about
        # 40 ms a partition, ten seconds for a pipeline's few hundred).
        partitions = self.assigned or self._partitions(10.0)
        ends = {}
        for tp in partitions:
            low, high = self.consumer.get_watermark_offsets(tp, timeout=10)
            if high > low:  # an empty partition (or one emptied by retention) has nothing
                ends[(tp.topic, tp.partition)] = high
        if not self.assigned:
            self.consumer.assign(partitions)
            self.assigned = partitions
        deadline = time.monotonic() + timeout
        applied = 0
        while True:
            stored = self.store.next_offsets()
            behind = [k for k, high in ends.items() if stored.get(k, 0) < high]
            if not behind:
                return applied
            if time.monotonic() > deadline:
                raise TimeoutError(f"read model still behind on {len(behind)} partition(s)")
            got = self.step()
            applied += got
            if got == 0:
                # A compacted changelog can end in a gap: its position tells.
                positions = self.consumer.position(
                    [TopicPartition(topic, p) for topic, p in behind]
                )
                for tp in positions:
                    if tp.offset >= ends[(tp.topic, tp.partition)]:
                        ends.pop((tp.topic, tp.partition))

    def _assign_when_ready(self, stop: threading.Event) -> None:
        """Assign once every topic exists: a desk started with (or before) the worker
        waits for the changelog the worker creates as it starts."""
        said = None
        while not stop.is_set():
            try:
                self.assign()
                return
            except MissingTopics as exc:
                if str(exc) != said:
                    log.warning("waiting for topics: %s", exc)
                    said = str(exc)
            stop.wait(WAIT_FOR_TOPICS_S)

    def run(self, stop: threading.Event) -> None:
        """Read until ``stop`` is set."""
        self._assign_when_ready(stop)
        retention = self.topics.retention()
        discovered = purged = time.monotonic()
        while not stop.is_set():
            self.step()
            now = time.monotonic()
            if now - discovered > REDISCOVER_S:
                discovered = now
                known = {tp.topic for tp in self.assigned}
                names = set(self.topics.select(self.consumer.list_topics(timeout=10).topics))
                if names - known:
                    log.info("new topics to read: %d", len(names - known))
                    self.assign()
            if now - purged > PURGE_S:
                purged = now
                dropped = self.store.purge(retention)
                log.info("purged rows past retention: %s", dropped)
